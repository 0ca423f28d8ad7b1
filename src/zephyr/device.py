"""Where a command runs and in which precision: the one place that decides (`--device`, recipe `device`).

    auto  -> cuda if torch sees a GPU, else mps (Apple), else cpu
    cpu   -> bf16 autocast when `bf16` is asked for AND the CPU has AMX/AVX512-BF16, else fp32
    cuda  -> bf16 autocast where the GPU supports it, else fp16 autocast with a gradient scaler
    mps   -> fp32 (MPS autocast support varies between torch releases; kept off)

Training keeps fp32 LoRA weights in every case (the frozen base is stored in the autocast dtype);
`Precision.mixed_precision` is what accelerate's Accelerator is built with, so its autocast and,
for fp16, its GradScaler are the ones used.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from zephyr.errors import ZephyrError

DEVICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def pick(name: str = "auto") -> str:
    """`auto|cpu|cuda|mps` -> the device type to use; an unavailable explicit choice is an error."""
    if name not in DEVICES:
        raise ZephyrError(f"device '{name}' is unknown; choose one of {', '.join(DEVICES)}")
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if _mps_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ZephyrError(
            "device 'cuda' was asked for but torch sees no CUDA GPU (CPU-only torch build, or no "
            "driver); install a CUDA build of torch or pass --device cpu / auto"
        )
    if name == "mps" and not _mps_available():
        raise ZephyrError(
            "device 'mps' was asked for but torch has no MPS backend here; pass --device cpu or auto"
        )
    return name


def cpu_bf16(cpuinfo: str | None = None) -> bool:
    """bf16 autocast only where the CPU multiplies bf16 in hardware (AMX or AVX512-BF16: ~3x fp32
    here); on AVX2-only CPUs bf16 matmul is emulated (~0.3 GFLOP/s), so they train in fp32.
    `cpuinfo`: the text of /proc/cpuinfo (read when None; tests pass a fake one)."""
    if cpuinfo is None:
        try:
            cpuinfo = open("/proc/cpuinfo").read()
        except OSError:
            return False
    flags = {f for line in cpuinfo.splitlines() if line.startswith("flags") for f in line.split()}
    return bool(flags & {"amx_bf16", "avx512_bf16"})


@dataclass(frozen=True)
class Precision:
    """Device type + autocast dtype (None: plain fp32)."""

    device: str = "cpu"
    dtype: torch.dtype | None = None

    @property
    def mixed_precision(self) -> str:
        """accelerate's name: 'no', 'bf16' or 'fp16' (fp16 brings its GradScaler)."""
        return {None: "no", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    @property
    def weights_dtype(self) -> str:
        """dtype to store the frozen base in (see train.common.load_policy)."""
        return {None: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[self.dtype]

    @property
    def label(self) -> str:
        return (
            f"{self.device} {'fp32' if self.dtype is None else self.mixed_precision + ' autocast'}"
        )

    def autocast(self) -> Any:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device, dtype=self.dtype)

    def __bool__(self) -> bool:  # "is mixed precision on" (what the old `bf16` flag meant)
        return self.dtype is not None


FP32 = Precision()


def precision(device: str, mixed: bool) -> Precision:
    """The autocast precision for training on `device` (a `pick` result) when `mixed` is asked for."""
    if not mixed or device == "mps":
        return Precision(device, None)
    if device == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        return Precision("cuda", torch.bfloat16 if bf16 else torch.float16)
    return Precision("cpu", torch.bfloat16 if cpu_bf16() else None)


def eval_dtype(dtype: str, device: str = "auto") -> str:
    """The dtype to evaluate in. `auto`: bfloat16 where the hardware multiplies it fast (a CUDA
    GPU with bf16; a CPU with AMX / AVX512-BF16, where GSM8K on SmolLM2 runs 2.5x faster than
    fp32), else float32 (an AVX2-only CPU emulates bf16 matmul at ~0.3 GFLOP/s)."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if precision(pick(device), True).dtype == torch.bfloat16 else "float32"


def accelerator(prec: Precision, log_with: list[str] | None = None, project_dir: Any = None) -> Any:
    """accelerate's Accelerator on `prec.device` with its mixed precision.

    split_batches: Zephyr plans each step's global batch itself and gives each process a share,
    so the prepared scheduler must step once per optimizer step (not once per process).
    cpu=True on a CPU run: under torchrun-style launches (recipes/accelerate/cpu_2proc.yaml) the
    processes then join one gloo group instead of each training alone.
    log_with / project_dir: accelerate's experiment trackers and where file-based ones write.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DataLoaderConfiguration

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") != prec.mixed_precision:
        # one process training twice (pipeline sft then dpo, tests) in different precisions:
        # accelerate's per-process singleton refuses a change; the process group is kept
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(
        cpu=prec.device == "cpu",
        mixed_precision=prec.mixed_precision,
        dataloader_config=DataLoaderConfiguration(split_batches=True),
        log_with=log_with or None,
        project_dir=project_dir,
    )


def place(model: Any, name: str = "auto") -> Any:
    """Move an inference model to the chosen device. Zephyr's quantized artifacts hold CPU
    kernels' layouts (torchao int4/int8 CPU tensors): `auto` keeps them on the CPU, and an
    explicit GPU choice is refused."""
    quantized = getattr(model, "zephyr_quantization", None) is not None
    if quantized and name == "auto":
        return model
    device = pick(name)
    if quantized and device != "cpu":
        raise ZephyrError(
            f"this is a Zephyr quantized model (CPU int4/int8 kernels); --device {name} cannot run it, pass --device cpu"
        )
    return model.to(device)
