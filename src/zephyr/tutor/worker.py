"""The tutor server's model worker: a bounded job queue in front of worker threads.

The model runs in one worker thread (a CPU has no spare cores for two generations at once); each
request is a Job whose events reach the event loop through an asyncio.Queue. More than
`max_queue` jobs in flight gives 429, waiting longer than `queue_timeout_s` for the worker gives
503, both with Retry-After. A client that hangs up sets the job's cancel flag (a watcher polls
for the disconnect), and a queued job whose client left is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import Request

from zephyr.tutor.validate import ApiError

if TYPE_CHECKING:
    from zephyr.tutor.state import ServeConfig

log = logging.getLogger("zephyr.tutor")


class Job:
    """One request's work, run in the worker thread; events flow back through an asyncio.Queue."""

    def __init__(self, fn: Callable[[Job], None], loop: asyncio.AbstractEventLoop):
        self.fn, self.loop = fn, loop
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancel = threading.Event()
        self.lock = threading.Lock()
        self.started = False
        self.enqueued = time.perf_counter()
        self.watcher: asyncio.Task | None = None  # the server's disconnect watcher

    def emit(self, kind: str, data: Any = None) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, data))


class Engine:
    """A bounded job queue in front of one worker thread that owns the model."""

    def __init__(self, max_queue: int, workers: int = 1):
        self.max_queue = max_queue
        self.jobs: queue.Queue[Job | None] = queue.Queue()
        self.inflight = 0
        self.served = 0
        self.lock = threading.Lock()
        # one worker per llama.cpp sequence slot: their requests share the engine's batches
        self.threads = [
            threading.Thread(target=self._work, name=f"zephyr-worker-{i}", daemon=True)
            for i in range(workers)
        ]
        for t in self.threads:
            t.start()

    def submit(self, fn: Callable[[Job], None], retry_after: int) -> Job:
        with self.lock:
            if self.inflight >= self.max_queue:
                err = ApiError(
                    429,
                    f"the server is busy ({self.inflight} requests in flight); retry shortly",
                    code="queue_full",
                )
                err.headers["Retry-After"] = str(retry_after)
                raise err
            self.inflight += 1
        job = Job(fn, asyncio.get_running_loop())
        self.jobs.put(job)
        return job

    def alive(self) -> bool:
        return all(t.is_alive() for t in self.threads)

    def close(self) -> None:
        for _ in self.threads:
            self.jobs.put(None)
        for t in self.threads:
            t.join(timeout=10)

    def _work(self) -> None:
        while (job := self.jobs.get()) is not None:
            try:
                with job.lock:  # a job that timed out in the queue is skipped, never half-run
                    job.started = not job.cancel.is_set()
                if job.started:
                    job.emit("started")
                    job.fn(job)
            except ApiError as e:
                job.emit("error", e)
            except Exception as e:  # one bad request must not kill the worker
                log.exception("generation failed")
                job.emit(
                    "error",
                    ApiError(
                        500, f"generation failed: {type(e).__name__}: {e}", code="server_error"
                    ),
                )
            finally:
                with self.lock:
                    self.inflight -= 1
                    self.served += 1


async def run_job(
    request: Request, engine: Engine, work: Callable[[Job], None], stream: bool, cfg: ServeConfig
) -> Job:
    """Queue `work`, cancel it if the client leaves, and wait until the worker is ready."""
    job = engine.submit(work, cfg.retry_after_s)
    job.watcher = asyncio.create_task(watch(request, job, cfg.disconnect_poll_s))
    try:
        await wait_ready(job, cfg.queue_timeout_s, cfg.retry_after_s)
    except BaseException:
        job.cancel.set()
        job.watcher.cancel()
        raise
    if stream:  # from here the StreamingResponse notices the disconnect itself
        job.watcher.cancel()
    return job


async def wait_ready(job: Job, timeout_s: float, retry_after_s: int) -> None:
    """Wait for the worker to take the job (503 after `timeout_s`), then for 'ready'.

    A client that hangs up while its job is queued gets 499 (logged `cancelled`) and the
    worker skips the job; once started, the cancel flag stops it at the next token.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic() if deadline else None
        try:
            kind, data = await asyncio.wait_for(job.events.get(), left)
        except TimeoutError:
            with job.lock:
                if not job.started:
                    job.cancel.set()
                    err = ApiError(
                        503,
                        f"no worker free within {timeout_s:g} s; retry shortly",
                        code="queue_timeout",
                    )
                    err.headers["Retry-After"] = str(retry_after_s)
                    raise err from None
            deadline = None
            continue
        if kind == "disconnected":
            with job.lock:
                if not job.started:  # the worker reads the flag under this lock: never runs
                    raise ApiError(
                        499, "the client closed the connection before its turn",
                        code="client_closed",
                    )  # fmt: skip
        elif kind == "error":
            raise data
        elif kind == "ready":
            return


async def watch(request: Request, job: Job, poll_s: float) -> None:
    """Cancel the job when the client hangs up (starlette does not cancel the handler)."""
    while not await request.is_disconnected():
        await asyncio.sleep(poll_s)
    job.cancel.set()
    job.events.put_nowait(("disconnected", None))


async def outcome(job: Job) -> Any:
    """The job's 'done' data (non-streamed requests); the cancel flag is set on the way out."""
    try:
        while True:
            kind, data = await job.events.get()
            if kind == "done":
                return data
            if kind == "error":
                raise data
    finally:
        job.cancel.set()
        job.watcher.cancel()
