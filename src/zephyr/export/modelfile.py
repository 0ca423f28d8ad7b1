"""The Ollama Modelfile written beside an exported GGUF (`ollama create tutor -f x.Modelfile`).

A ChatML model (SmolLM2 and what Zephyr trains from it) gets an explicit TEMPLATE that renders
the conversation as the Hugging Face chat template does; any other template is left to Ollama,
which reads `tokenizer.chat_template` from the GGUF. The system prompt and sampling defaults are
the tutor's (`zephyr serve`).
"""

from __future__ import annotations

CHATML_TEMPLATE = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n"
    "{{ .Content }}<|im_end|>\n"
    "{{ end }}<|im_start|>assistant\n"
)


def _quote(text: str) -> str:
    return '"""' + text.replace('"""', '\\"\\"\\"') + '"""'


def modelfile_text(
    gguf_name: str,
    chat_template: str | None,
    system: str | None = None,
    temperature: float = 0.3,
    top_p: float = 0.95,
    num_ctx: int = 2048,
) -> str:
    """The Modelfile's text; FROM is relative to the Modelfile's folder."""
    from zephyr.tutor.generate import TUTOR_SYSTEM

    lines = [f"# Ollama: ollama create <name> -f {gguf_name.removesuffix('.gguf')}.Modelfile"]
    lines.append(f"FROM ./{gguf_name}")
    if chat_template and "<|im_start|>" in chat_template:
        lines.append(f"TEMPLATE {_quote(CHATML_TEMPLATE)}")
        lines.append('PARAMETER stop "<|im_end|>"')
    else:
        lines.append("# TEMPLATE: Ollama uses the chat template stored in the GGUF")
    lines.append(f"SYSTEM {_quote(system or TUTOR_SYSTEM)}")
    lines.append(f"PARAMETER temperature {temperature:g}")
    lines.append(f"PARAMETER top_p {top_p:g}")
    lines.append(f"PARAMETER num_ctx {num_ctx}")
    return "\n".join(lines) + "\n"
