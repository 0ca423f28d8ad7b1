"""A quantized model on disk, and back: `save_artifact(...)` and `load_quantized(path)`.

Layout of an artifact directory (built in a temp dir, then swapped in: zephyr.io.atomic_dir):
    config.json, generation_config.json, tokenizer files   (as save_pretrained writes them)
    model.safetensors   plain tensors: unquantized params in the runtime dtype, and for each
                        quantized linear `<name>.qweight` (+ `.scales/.zeros` int4 or `.scale`
                        int8, + `.outlier_idx/.outlier_val` for easyquant, + `.lora_A/.lora_B`
                        bf16 factors for the -lora variant)
    quantization.json   method, bits, group size, quantized and skipped layers, embedding,
                        weight errors, source model hash, lora base and ranks, provenance

Everything is safetensors (no pickle): torchao's int4 CPU tensor cannot be serialised, so we
store its codes and rebuild the tensor at load time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from zephyr.arch import embedding_name, module_name
from zephyr.errors import ZephyrError
from zephyr.io import atomic_dir, read_json, write_json
from zephyr.quantize.qweight import (
    Int4Weight,
    Int8Embedding,
    Int8Weight,
    add_lora_hook,
    add_outlier_hook,
)
from zephyr.tokenizer import load_dir_tokenizer

FORMAT = "zephyr-quant/1"
# config.json's model_type: plain `AutoModelForCausalLM.from_pretrained` refuses the folder with an
# error naming it (it would otherwise load random weights where the int4/int8 codes are)
MODEL_TYPE = "zephyr-quantized"
QUANT_SUFFIXES = (
    *("qweight", "scales", "zeros", "scale", "outlier_idx", "outlier_val", "act_scale"),
    *("lora_A", "lora_B"),
)


def save_artifact(
    model: Any,
    tokenizer: Any,
    weights: dict[str, Int4Weight | Int8Weight],
    embedding: Int8Weight | None,
    meta: dict,
    out: Path,
    extra: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write the artifact atomically (zephyr.io.atomic_dir: an earlier `out` stays until this one
    is complete). `extra` tensors (the -lora variant's `<name>.lora_A/B`) are stored as they are."""
    from safetensors.torch import save_file

    dtype = getattr(torch, meta["dtype"])
    out = Path(out)
    with atomic_dir(out) as tmp:
        tied = bool(getattr(model.config, "tie_word_embeddings", False))
        embed, head = embedding_name(model), module_name(model, model.get_output_embeddings())
        skip = {f"{n}.weight" for n in weights}
        if tied:
            skip.add(f"{head}.weight")  # the same tensor as the embedding
        if embedding is not None:
            skip |= {f"{embed}.weight", f"{head}.weight"}
        sd: dict[str, torch.Tensor] = {}
        for name, t in model.state_dict().items():
            if name not in skip:
                sd[name] = t.detach().to(dtype if t.is_floating_point() else t.dtype).contiguous()
        for name, w in weights.items():
            sd.update(w.tensors(name))
        sd.update(extra or {})
        if embedding is not None:
            sd.update(embedding.tensors(embed))
            if not tied:
                raise ZephyrError(
                    "--quantize-embedding needs tied embeddings (lm_head = embedding); drop the flag for this model"
                )
        save_file(sd, str(tmp / "model.safetensors"), metadata={"format": FORMAT})
        config = model.config
        config.dtype = meta["dtype"]
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(tmp)
        guard_config(tmp / "config.json")
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "quantization.json", {"format": FORMAT, **meta})
    return out


def guard_config(path: Path) -> None:
    """Rename the model type so that transformers alone cannot mistake the folder for its own."""
    raw = read_json(path)
    raw["zephyr_base_model_type"] = raw["model_type"]
    raw["model_type"] = MODEL_TYPE
    write_json(path, raw)


def read_config(path: Path) -> Any:
    """The base architecture's config from config.json (guarded or, for older artifacts, plain)."""
    from transformers import CONFIG_MAPPING

    raw = read_json(Path(path) / "config.json")
    if raw.get("model_type") == MODEL_TYPE:
        raw["model_type"] = raw.pop("zephyr_base_model_type")
    return CONFIG_MAPPING[raw["model_type"]].from_dict(raw)


def read_meta(path: str | Path) -> dict:
    meta = read_json(Path(path) / "quantization.json")
    if meta.get("format") != FORMAT:
        raise ZephyrError(
            f"{path}/quantization.json has format {meta.get('format')!r}, expected {FORMAT}; re-quantize with `zephyr quantize`"
        )
    return meta


def load_quantized(path: str | Path) -> tuple[Any, Any]:
    """Rebuild the model on the meta device, then assign the saved tensors (int4 weights become
    torchao Int4OpaqueTensor, int8 weights Int8Tensor); returns (model, tokenizer) in eval mode."""
    from accelerate import init_empty_weights
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, GenerationConfig

    path = Path(path)
    meta = read_meta(path)
    dtype = getattr(torch, meta["dtype"])
    config = read_config(path)
    # parameters on meta (assigned from the file below); buffers that are never saved (rotary
    # inv_freq, Gemma's embedding scale) are computed for real, whatever each model calls them
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    sd = load_file(str(path / "model.safetensors"))
    for name, info in meta["layers"].items():
        mod = model.get_submodule(name)
        if info["bits"] == 4:
            w = Int4Weight.from_tensors(sd, name, info["group_size"])
            mod.weight = torch.nn.Parameter(w.runtime(), requires_grad=False)
            if w.outlier_idx is not None:
                add_outlier_hook(mod, w)
        else:
            w = Int8Weight.from_tensors(sd, name)
            mod.weight = torch.nn.Parameter(w.runtime(dtype), requires_grad=False)
        if info.get("lora_rank"):  # the fine-tuning, kept unmerged over the quantized base
            add_lora_hook(mod, sd[f"{name}.lora_A"], sd[f"{name}.lora_B"])
        for suffix in QUANT_SUFFIXES:
            sd.pop(f"{name}.{suffix}", None)
    if meta.get("embedding"):
        embed = embedding_name(model)
        emb = Int8Weight.from_tensors(sd, embed)
        old = model.get_input_embeddings()
        scale = getattr(old, "scalar_embed_scale", 1.0)  # Gemma scales embeddings by sqrt(hidden)
        model.set_input_embeddings(Int8Embedding(emb, dtype, old.padding_idx, scale))
        head = model.get_output_embeddings()
        head.weight = torch.nn.Parameter(emb.runtime(dtype), requires_grad=False)
        sd.pop(f"{embed}.qweight")
        sd.pop(f"{embed}.scale")
    missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    if unexpected:
        raise ZephyrError(
            f"{path}/model.safetensors has tensors this model does not use ({unexpected[:3]}); the artifact is corrupt, re-quantize it"
        )
    if config.tie_word_embeddings and not meta.get("embedding"):
        model.get_output_embeddings().weight = model.get_input_embeddings().weight
    left = [n for n, p in list(model.named_parameters()) + list(model.named_buffers()) if p.is_meta]
    if left:
        raise ZephyrError(
            f"{path}: tensors missing from model.safetensors ({left[:3]}); re-quantize it"
        )
    if (path / "generation_config.json").exists():
        model.generation_config = GenerationConfig.from_pretrained(path)
    model.zephyr_quantization = meta
    return model.eval(), load_dir_tokenizer(path)


def artifact_bytes(path: str | Path) -> int:
    """On-disk size of a model directory's weights (safetensors / bin files)."""
    p = Path(path)
    return sum(f.stat().st_size for f in p.iterdir() if f.suffix in (".safetensors", ".bin", ".pt"))
