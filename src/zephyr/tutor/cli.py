"""CLI commands of the tutor stage: `zephyr chat`, `zephyr serve`, `zephyr review ...`."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from zephyr.errors import ZephyrError

console = Console()

ModelArg = Annotated[
    str,
    typer.Argument(
        help="Model spec: smollm2-135m, a run's model/ dir, an adapter or quantized dir, a .gguf"
    ),
]
DtypeOpt = Annotated[str, typer.Option(help="float32, bfloat16 or float16")]
DeviceOpt = Annotated[str, typer.Option(help="auto|cpu|cuda|mps (zephyr.device)")]
PolicyOpt = Annotated[
    Path | None, typer.Option(help="Safety policy YAML (default: the shipped default_policy.yaml)")
]
NoPolicyOpt = Annotated[bool, typer.Option("--no-policy", help="Disable the safety policy")]
CalcOpt = Annotated[
    bool | None,
    typer.Option(
        help="Complete <<expr= with the exact result (default: on when the model was trained "
        "with the calculator annotations)"
    ),
]
ShowCalcOpt = Annotated[bool, typer.Option(help="Show the <<expr=result>> annotations")]
SystemOpt = Annotated[
    str | None, typer.Option(help="System prompt (default: the patient STEM tutor)")
]


def default_audit() -> Path:
    from zephyr.models import zephyr_home

    return zephyr_home() / "audit.sqlite"


EngineOpt = Annotated[
    str, typer.Option(help="llamacpp | hf | auto (llama.cpp when installed and the model converts)")
]
QuantOpt = Annotated[str, typer.Option(help="llama.cpp engine: GGUF type, f16|q8_0|q4_0|q4_k_m")]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(help="llama.cpp engine: CPU threads (default: $OMP_NUM_THREADS or all)"),
]
CtxOpt = Annotated[int, typer.Option(help="llama.cpp engine: context per conversation (tokens)")]

AuditOpt = Annotated[
    Path | None, typer.Option(help="Audit log SQLite file (default: $ZEPHYR_HOME/audit.sqlite)")
]
DbOpt = Annotated[Path | None, typer.Option(help="Audit log (default: $ZEPHYR_HOME/audit.sqlite)")]
EntryArg = Annotated[int, typer.Argument(help="Entry id")]
NoteOpt = Annotated[str | None, typer.Option()]

# `zephyr serve` flags
HostOpt = Annotated[str, typer.Option(help="Bind address (0.0.0.0 exposes it to the network)")]
TokenOpt = Annotated[
    str | None,
    typer.Option(help="Bearer token clients must send (default: $ZEPHYR_TOKEN; none = open)"),
]
MaxQueueOpt = Annotated[int, typer.Option(help="Requests queued or running before 429")]
QueueTimeoutOpt = Annotated[
    float, typer.Option(help="Seconds a request may wait for the model before 503")
]
MaxTokensLimitOpt = Annotated[int, typer.Option(help="Largest max_tokens a request may ask for")]
MaxCharsOpt = Annotated[int, typer.Option(help="Longest message content (characters)")]
MaxMessagesOpt = Annotated[int, typer.Option(help="Most messages in one request")]
AllowedHostOpt = Annotated[
    list[str] | None,
    typer.Option(help="A Host name clients use besides the bound address (repeatable)"),
]
AllowedOriginOpt = Annotated[
    list[str] | None, typer.Option(help="A web origin whose pages may call the API (repeatable)")
]
OverrideOpt = Annotated[
    bool, typer.Option(help="Let a client's system message replace the tutor's system prompt")
]
PracticeDataOpt = Annotated[
    Path | None,
    typer.Option(help="Folder laid out like ../shared/data: GSM8K/ARC items practice checks"),
]
ParallelOpt = Annotated[int, typer.Option(help="llama.cpp engine: conversations decoded together")]


def load_generator(model: str, engine: str, engine_opts: dict, dtype: str, device: str) -> tuple:
    """(model or llama.cpp engine, tokenizer, engine name) for chat and serve.

    `auto` takes llama.cpp when it is installed and the device is the CPU (the llama.cpp wheel
    installed here is CPU-only), else transformers; both run the calculator hook."""
    from zephyr.device import pick, place
    from zephyr.tutor.engines import EngineOptions, load_engine

    if engine == "auto" and pick(device) != "cpu":
        engine = "hf"
    m, tok, used = load_engine(model, EngineOptions(engine, **engine_opts), dtype=dtype)
    return (place(m, device) if used == "hf" else m), tok, used


def _policy(path: Path | None, disabled: bool):
    from zephyr.tutor.policy import Policy

    return Policy.empty() if disabled else Policy.load(path)


def _read_choices(ask) -> list[str]:
    choices = []
    while True:
        line = ask(f"  {chr(65 + len(choices))}. ")
        if line is None or not line.strip():
            return choices
        choices.append(line.strip())


def guarded(model, tokenizer, messages, params, policy, out):
    """Stream an answer to `out`, stopping it when the policy's output rules trigger."""
    import threading

    from zephyr.tutor.generate import generate

    said, flags, cancel = [""], [], threading.Event()

    def on_text(piece: str) -> None:
        if flags:
            return
        said[0] += piece
        if found := policy.check(said[0], "output"):
            flags.extend(found)
            cancel.set()
            return
        out(piece, end="")

    return generate(model, tokenizer, messages, params, on_text, cancel=cancel), flags


def _practice_log(audit, model_id: str):
    """Practice events (start, each hint level, check, reveal) as audit entries."""

    def log(event: str, asked: str, said: str) -> None:
        if audit is not None:
            audit.log(
                model=model_id, endpoint="cli-practice", messages=[{"role": "user", "content": asked}],
                response=said, finish_reason=event, flags=[{"rule": f"practice:{event}"}],
            )  # fmt: skip

    return log


@dataclass
class _Terminal:
    """What every turn of the terminal chat needs."""

    model: Any
    tokenizer: Any
    model_id: str
    system: str
    params: Any
    policy: Any
    audit: Any
    ask: Callable[[str], str | None]
    out: Callable[..., None]


def chat_loop(
    model, tokenizer, model_id: str, system: str, params, policy, audit, ask, out
) -> None:
    """The terminal chat: `ask(prompt) -> str | None` reads a line (None at end of input)."""
    from zephyr.tutor.practice import PRACTICE_HELP, ChatPractice

    term = _Terminal(model, tokenizer, model_id, system, params, policy, audit, ask, out)
    history: list[dict] = []
    mode = "practice" if policy.practice.default_mode == "practice" else "chat"
    practice = ChatPractice(policy, _practice_log(audit, model_id))
    out("Zephyr tutor. /mcq multiple-choice mode, /practice hints before answers, /chat back, "
        "/reset new conversation, /quit.")  # fmt: skip
    while True:
        line = ask({"chat": "you> ", "mcq": "question> "}.get(mode, "practice> "))
        if line is None or line.strip() in ("/quit", "/exit"):
            return
        text = line.strip()
        if not text:
            continue
        if text == "/practice" or (mode == "practice" and not text.startswith("/")):
            if text == "/practice":
                mode, practice.session = "practice", None
            out(PRACTICE_HELP if text == "/practice" else practice.turn(text))
            continue
        if text in ("/mcq", "/chat"):
            mode = text[1:]
            out(
                "MCQA mode: type the question, then one choice per line, an empty line to answer."
                if mode == "mcq"
                else "chat mode"
            )
            continue
        if text == "/reset":
            history.clear()
            out("(new conversation)")
            continue
        hits = policy.check(text, "input")
        if mode == "mcq":
            _mcq_turn(term, text, hits)
        else:
            _chat_turn(term, history, text, hits)


def _mcq_turn(term: _Terminal, text: str, hits: list) -> None:
    """Read the choices, answer with the letter and its probabilities, log the turn."""
    import time

    from zephyr.tutor.mcqa import answer_mcq, mcq_messages, say

    choices = _read_choices(term.ask)
    messages = mcq_messages(text, choices, term.system)
    if hits:
        term.out(hits[0].message)
    elif len(choices) < 2:
        term.out("(an MCQA question needs at least two choices)")
        return
    else:
        t0 = time.perf_counter()
        ans = answer_mcq(
            term.model, term.tokenizer, text, choices, term.system,
            term.policy.mcqa.debias, term.policy.mcqa.min_confidence,
        )  # fmt: skip
        probs = "  ".join(f"{k} {v:.0%}" for k, v in ans["probs"].items())
        term.out(f"answer: {'unsure' if ans['unsure'] else ans['letter']}    ({probs})")
        if ans["unsure"]:
            term.out(say(ans, choices))
    if term.audit is not None:
        term.audit.log(
            model=term.model_id, endpoint="cli-mcq", messages=messages,
            response=hits[0].message if hits else ans["letter"],
            status="refused" if hits else "ok",
            latency_ms=0.0 if hits else (time.perf_counter() - t0) * 1000,
            flags=[h.to_dict() for h in hits],
        )  # fmt: skip


def _chat_turn(term: _Terminal, history: list[dict], text: str, hits: list) -> None:
    """Stream the tutor's answer to `text` (or the policy's refusal), then log the turn."""
    from zephyr.tutor.generate import with_system
    from zephyr.tutor.practice import verify_reply

    history.append({"role": "user", "content": text})
    messages = with_system(history, term.system)
    if hits:
        term.out(hits[0].message)
        history.pop()
        if term.audit is not None:
            term.audit.log(
                model=term.model_id,
                endpoint="cli-chat",
                messages=messages,
                response=hits[0].message,
                status="refused",
                flags=[h.to_dict() for h in hits],
            )
        return
    term.out("tutor> ", end="")
    try:
        result, flags = guarded(
            term.model, term.tokenizer, messages, term.params, term.policy, term.out
        )
    except KeyboardInterrupt:  # Ctrl-C stops this answer, not the chat
        term.out("\n(stopped)")
        history.pop()
        return
    if flags:
        term.out(f"\n{flags[0].message}")
    elif note := verify_reply(text, result.text):  # exact check of the model's answer
        term.out(f"\n{note}", end="")
    term.out("")
    history.append({"role": "assistant", "content": flags[0].message if flags else result.text})
    if term.audit is not None:
        term.audit.log(
            model=term.model_id, endpoint="cli-chat", messages=messages, response=result.text,
            status="refused" if flags else "ok",
            finish_reason="content_filter" if flags else result.finish_reason,
            latency_ms=result.total_s * 1000, prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens, flags=[f.to_dict() for f in flags],
        )  # fmt: skip


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the top-level app."""
    app.command()(chat)
    app.command()(serve)
    review_app = typer.Typer(
        help="Review the audit log: list, approve/flag, correct, export preference pairs.",
        no_args_is_help=True,
    )
    review_app.command("list")(review_list)
    review_app.command("show")(review_show)
    review_app.command("approve")(review_approve)
    review_app.command("flag")(review_flag)
    review_app.command("export")(review_export)
    app.add_typer(review_app, name="review")


def chat(
    model: ModelArg = "smollm2-135m",
    dtype: DtypeOpt = "float32",
    system: SystemOpt = None,
    max_tokens: Annotated[int, typer.Option(help="Longest answer in tokens")] = 384,
    temperature: Annotated[float, typer.Option(help="0 = greedy")] = 0.3,
    top_p: Annotated[float, typer.Option()] = 0.95,
    seed: Annotated[int, typer.Option()] = 0,
    policy: PolicyOpt = None,
    no_policy: NoPolicyOpt = False,
    audit: AuditOpt = None,
    no_audit: Annotated[bool, typer.Option("--no-audit", help="Do not log this session")] = False,
    calculator: CalcOpt = None,
    show_calc: ShowCalcOpt = False,
    device: DeviceOpt = "auto",
    engine: EngineOpt = "auto",
    quant: QuantOpt = "f16",
    ctx: CtxOpt = 2048,
    threads: ThreadsOpt = None,
) -> None:
    """Chat with a model in the terminal (streamed answers); /mcq switches to multiple choice."""
    from zephyr.tutor.audit import Audit
    from zephyr.tutor.calculator import trained_with
    from zephyr.tutor.generate import TUTOR_SYSTEM, GenParams
    from zephyr.tutor.server import model_name

    rules = _policy(policy, no_policy)
    calc = trained_with(model) if calculator is None else calculator
    engine_opts = {"quant": quant, "parallel": 1, "ctx": ctx, "threads": threads}
    m, tok, used = load_generator(model, engine, engine_opts, dtype, device)
    console.print(f"[dim]engine: {used}[/]")
    log = None if no_audit else Audit(audit or default_audit())
    params = GenParams(
        max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed,
        calculator=calc, show_calc=show_calc,
    )  # fmt: skip
    chat_loop(m, tok, model_name(model), system or TUTOR_SYSTEM, params, rules, log, _ask, _out)


def _ask(prompt: str) -> str | None:
    """A line from the terminal; None at the end of input."""
    try:
        return input(prompt)
    except EOFError:
        return None


def _out(text: str, end: str = "\n") -> None:
    sys.stdout.write(text + end)
    sys.stdout.flush()


def serve(
    model: ModelArg = "smollm2-135m",
    dtype: DtypeOpt = "float32",
    host: HostOpt = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    token: TokenOpt = None,
    system: SystemOpt = None,
    max_queue: MaxQueueOpt = 16,
    queue_timeout: QueueTimeoutOpt = 30.0,
    max_tokens_limit: MaxTokensLimitOpt = 1024,
    max_message_chars: MaxCharsOpt = 16000,
    max_messages: MaxMessagesOpt = 64,
    allowed_host: AllowedHostOpt = None,
    allowed_origin: AllowedOriginOpt = None,
    allow_system_override: OverrideOpt = False,
    policy: PolicyOpt = None,
    no_policy: NoPolicyOpt = False,
    audit: AuditOpt = None,
    no_audit: Annotated[bool, typer.Option("--no-audit", help="Do not keep an audit log")] = False,
    calculator: CalcOpt = None,
    show_calc: ShowCalcOpt = False,
    practice_data: PracticeDataOpt = None,
    device: DeviceOpt = "auto",
    engine: EngineOpt = "auto",
    quant: QuantOpt = "f16",
    parallel: ParallelOpt = 8,
    ctx: CtxOpt = 2048,
    threads: ThreadsOpt = None,
) -> None:
    """Serve a model: OpenAI-compatible API (/v1/chat/completions, /v1/models), /v1/mcqa, web page at /."""
    import uvicorn

    from zephyr.tutor.audit import Audit
    from zephyr.tutor.calculator import trained_with
    from zephyr.tutor.generate import TUTOR_SYSTEM
    from zephyr.tutor.server import ServeConfig, create_app, model_name

    token = token or os.environ.get("ZEPHYR_TOKEN") or None
    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        console.print(
            "[yellow]warning:[/] serving beyond this machine without --token: anyone can use it"
        )
    cfg = ServeConfig(
        token=token,
        system=system or TUTOR_SYSTEM,
        max_queue=max_queue,
        queue_timeout_s=queue_timeout,
        max_tokens_limit=max_tokens_limit,
        max_message_chars=max_message_chars,
        max_messages=max_messages,
        allowed_hosts=allowed_host or [],
        allowed_origins=allowed_origin or [],
        allow_system_override=allow_system_override,
        calculator=trained_with(model) if calculator is None else calculator,
        show_calc=show_calc,
        practice_data=str(practice_data) if practice_data else None,
    )
    rules = _policy(policy, no_policy)
    engine_opts = {"quant": quant, "parallel": parallel, "ctx": ctx, "threads": threads}
    m, tok, used = load_generator(model, engine, engine_opts, dtype, device)
    log = None if no_audit else Audit(audit or default_audit())
    app = create_app(m, tok, model_name(model), cfg, log, rules)
    console.print(
        f"serving {model_name(model)} on http://{host}:{port}  (engine: {used}, "
        f"audit: {log.path if log else 'off'})"
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")


def open_audit(db: Path | None):
    """The audit log `zephyr review` reads (an error naming the file when there is none)."""
    from zephyr.tutor.audit import Audit

    path = db or default_audit()
    if not path.exists():
        raise ZephyrError(
            f"audit log not found: {path}; pass --db or run `zephyr serve` / `zephyr chat` first"
        )
    return Audit(path)


def review_list(
    db: DbOpt = None,
    review: Annotated[str | None, typer.Option(help="pending, approved or flagged")] = None,
    status: Annotated[str | None, typer.Option(help="ok, refused or cancelled")] = None,
    rule: Annotated[
        str | None, typer.Option(help="Only entries a policy rule triggered on")
    ] = None,
    search: Annotated[str | None, typer.Option(help="Text in the prompt or response")] = None,
    limit: Annotated[int, typer.Option()] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")] = False,
) -> None:
    """List audit entries, newest first."""
    import json

    from zephyr.tutor.review import summary_line

    rows = open_audit(db).rows(review=review, status=status, rule=rule, search=search, limit=limit)
    if as_json:
        for e in rows:
            typer.echo(json.dumps(e, ensure_ascii=False))
        return
    table = Table(
        "id", "time", "endpoint", "status", "review", "flags", "fix", "prompt", "response"
    )
    for e in rows:
        table.add_row(*summary_line(e, width=40))
    console.print(table)


def review_show(entry: EntryArg, db: DbOpt = None) -> None:
    """Print one entry in full."""
    import json

    typer.echo(json.dumps(open_audit(db).get(entry), indent=2, ensure_ascii=False))


def review_approve(entry: EntryArg, db: DbOpt = None, note: NoteOpt = None) -> None:
    """Mark an entry as a good answer."""
    e = open_audit(db).set_review(entry, "approved", note=note)
    console.print(f"entry {e['id']}: approved")


def review_flag(
    entry: EntryArg,
    db: DbOpt = None,
    correction: Annotated[
        str | None, typer.Option(help="The answer the model should have given")
    ] = None,
    correction_file: Annotated[
        Path | None, typer.Option(help="Read the correction from a file")
    ] = None,
    note: NoteOpt = None,
) -> None:
    """Mark an entry as a bad answer, optionally with the corrected answer."""
    if correction_file is not None:
        if not correction_file.exists():
            raise ZephyrError(f"correction file not found: {correction_file}")
        correction = correction_file.read_text(encoding="utf-8").strip()
    e = open_audit(db).set_review(entry, "flagged", correction=correction, note=note)
    console.print(f"entry {e['id']}: flagged" + (" with a correction" if e["correction"] else ""))


def review_export(
    out: Annotated[Path, typer.Argument(help="Output JSONL of preference pairs")],
    db: DbOpt = None,
) -> None:
    """Export flagged-and-corrected entries as preference pairs (chosen = correction)."""
    from zephyr.tutor.review import export_pairs

    n = export_pairs(open_audit(db), out)
    console.print(f"wrote {n} preference pairs to {out}")
