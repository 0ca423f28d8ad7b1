"""zephyr.device: device and precision choice. No GPU here: CUDA paths fake torch's answers."""

from __future__ import annotations

import pytest
import torch

from zephyr import device
from zephyr.errors import ZephyrError


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch reports a CUDA GPU (with bf16 unless the test says otherwise)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    return monkeypatch


def test_auto_picks_cuda_when_torch_sees_one(fake_cuda):
    assert device.pick("auto") == "cuda" == device.pick("cuda")
    assert device.pick("cpu") == "cpu"


def test_auto_is_cpu_here_and_cuda_is_refused_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device, "_mps_available", lambda: False)
    assert device.pick() == "cpu"
    with pytest.raises(ZephyrError, match="'cuda'.*--device cpu"):
        device.pick("cuda")
    with pytest.raises(ZephyrError, match="'tpu' is unknown"):
        device.pick("tpu")


def test_cuda_precision_bf16_else_fp16_with_scaler(fake_cuda):
    bf16 = device.precision("cuda", True)
    assert (bf16.dtype, bf16.mixed_precision, bf16.weights_dtype) == (
        torch.bfloat16,
        "bf16",
        "bfloat16",
    )
    fake_cuda.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    fp16 = device.precision("cuda", True)
    # accelerate builds its GradScaler exactly when mixed_precision is fp16
    assert (fp16.dtype, fp16.mixed_precision) == (torch.float16, "fp16")
    assert not device.precision("cuda", False) and device.precision("mps", True).dtype is None


def test_cpu_bf16_check_applies_to_cpus_only(monkeypatch):
    monkeypatch.setattr(device, "cpu_bf16", lambda: False)
    assert device.precision("cpu", True).dtype is None
    monkeypatch.setattr(device, "cpu_bf16", lambda: True)
    assert device.precision("cpu", True).dtype is torch.bfloat16
    # a GPU without bf16 still gets fp16, whatever the CPU says
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(device, "cpu_bf16", lambda: True)
    assert device.precision("cuda", True).dtype is torch.float16


def test_autocast_casts_matmuls_on_cpu():
    a = torch.randn(4, 4)
    with device.Precision("cpu", torch.bfloat16).autocast():
        assert (a @ a).dtype == torch.bfloat16
    with device.FP32.autocast():
        assert (a @ a).dtype == torch.float32


def test_place_keeps_quantized_models_on_the_cpu(fake_cuda):
    model = torch.nn.Linear(2, 2)
    assert device.place(model, "cpu") is model
    model.zephyr_quantization = {"method": "int8"}
    assert device.place(model, "auto") is model  # auto: the CPU kernels' device
    with pytest.raises(ZephyrError, match="quantized.*--device cpu"):
        device.place(model, "cuda")


def test_train_cli_refuses_cuda_on_a_cpu_machine(monkeypatch, tiny_model, tmp_path):
    from typer.testing import CliRunner

    from zephyr.cli import app

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    fixtures = tmp_path.parent  # never read: the device is checked first
    args = ["train", "sft", "--data", str(fixtures), "--out", str(tmp_path / "o"), "--device"]
    result = CliRunner().invoke(app, [*args, "cuda", "--model", str(tiny_model)])
    assert isinstance(result.exception, ZephyrError)


def test_checkpoint_keeps_the_fp16_loss_scale(tmp_path):
    """CUDA fp16 runs checkpoint accelerate's GradScaler; a CPU GradScaler stands in for it."""
    from zephyr.train import checkpoint

    net = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(net.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale(torch.ones(()))  # initialises the scale, as the first backward does
    scaler.update(new_scale=256.0)
    checkpoint.save(tmp_path, 3, net, opt, sched, 0, 1, lambda: None, 2, scaler)
    fresh = torch.amp.GradScaler("cpu", init_scale=1024.0)
    step = checkpoint.load(checkpoint.latest(tmp_path), net, opt, sched, 0, scaler=fresh)
    assert step == 3 and fresh.get_scale() == 256.0


def test_fsdp_keeps_one_dtype_per_layer(tiny_model):
    """FSDP flattens a layer's parameters into one tensor: the frozen base is not stored in bf16
    beside the fp32 adapter there (single process: it is, to halve memory and skip re-casts)."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from zephyr.train.common import load_policy
    from zephyr.train.config import SFTConfig

    bf16 = device.Precision("cpu", torch.bfloat16)
    for kind, want in ((DistributedType.NO, torch.bfloat16), (DistributedType.FSDP, torch.float32)):
        acc = SimpleNamespace(distributed_type=kind, device=torch.device("cpu"))
        lm, _ = load_policy(str(tiny_model), SFTConfig(), 0, bf16, acc)
        frozen = {p.dtype for p in lm.parameters() if not p.requires_grad}
        assert frozen == {want}, kind
        assert {p.dtype for p in lm.parameters() if p.requires_grad} == {torch.float32}


@pytest.mark.parametrize("command", ["eval", "chat", "serve"])
def test_inference_commands_take_device(command, monkeypatch, tiny_model):
    """--device reaches zephyr.device: on this CPU-only machine `cuda` is refused by name."""
    from typer.testing import CliRunner

    from zephyr.cli import app

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = [command, str(tiny_model), "--device", "cuda"]
    if command == "eval":
        args += ["--data-dir", str(tiny_model)]  # any existing dir: the device fails first
    result = CliRunner().invoke(app, [*args, "--no-audit"] if command != "eval" else args)
    text = f"{result.output}{result.exception!r}"
    assert result.exit_code != 0 and "'cuda'" in text and "--device cpu" in text, text


def test_scorer_runs_where_the_model_was_placed(tiny_model):
    from zephyr.eval.run import make_scorer

    scorer = make_scorer(str(tiny_model), device="cpu")
    assert scorer.device.type == "cpu" and next(scorer.model.parameters()).device.type == "cpu"
