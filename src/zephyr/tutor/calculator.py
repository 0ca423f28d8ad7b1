"""Calculator-augmented generation: GSM8K's `<<expr=result>>` annotations, evaluated exactly.

GSM8K's reference solutions write every computation as `48/2 = <<48/2=24>>24`. A model trained on
that convention writes `<<expr=` and Zephyr, not the model, writes the result and `>>`; the model
then continues from the true value (the GSM8K paper's calculator). Pieces:
- `evaluate(expr)`: a safe arithmetic evaluator (ast whitelist, exact Fractions, bounded size);
- `annotate(text)`: inserts the annotations into worked solutions whose steps write `a op b = c`;
- `forced_continuation(text)`: THE hook. Given the text generated so far it returns what must be
  written next (`"24>>"`) or None; any engine (HF, llama.cpp) can call it between tokens;
- `CalculatorProcessor`: the hook as a transformers LogitsProcessor (forces the result's tokens);
- `with_calculator(next_piece)`: the hook around any step-wise engine (one piece at a time);
- `strip_annotations` / `AnnotationFilter`: hide the annotations in displayed (streamed) text.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Any

from zephyr.errors import ZephyrError

MAX_CHARS = 200  # an annotation longer than this is not arithmetic a tutor writes
MAX_NODES = 64
MAX_EXPONENT = 64
MAX_DIGITS = 60  # numerator/denominator digits of any intermediate value
MARKER = "calculator.json"  # in a model dir: the model was trained on the annotations

_ASCII = str.maketrans({"×": "*", "÷": "/", "−": "-", "^": "**", "²": "^2", "³": "^3"})
_OPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
}
_OPEN = re.compile(r"<<([^<>=\n]{1," + str(MAX_CHARS) + r"})=$")
_ANNOTATION = re.compile(r"<<[^<>=\n]+=[^<>\n]*>>")


def _ascii(expr: str) -> str:
    # ² and ³ become **2 / **3; a thousands separator "1,000" becomes 1000
    out = expr.translate(_ASCII).replace("^", "**")
    return re.sub(r"(?<=\d),(?=\d{3}\b)", "", out)


def _check(x: Fraction, expr: str) -> Fraction:
    if len(str(x.numerator)) > MAX_DIGITS or len(str(x.denominator)) > MAX_DIGITS:
        raise ZephyrError(f"calculator: {expr!r} gives a number too large to write; not evaluated")
    return x


def _eval(node: ast.AST, expr: str) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return _check(Fraction(Decimal(repr(node.value))), expr)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        v = _eval(node.operand, expr)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        a, b = _eval(node.left, expr), _eval(node.right, expr)
        if isinstance(node.op, ast.Div) and b == 0:
            raise ZephyrError(f"calculator: division by zero in {expr!r}")
        return _check(_OPS[type(node.op)](a, b), expr)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        a, b = _eval(node.left, expr), _eval(node.right, expr)
        if b.denominator != 1 or abs(b) > MAX_EXPONENT or (a == 0 and b < 0):
            raise ZephyrError(
                f"calculator: exponent {b} in {expr!r} must be a whole number up to {MAX_EXPONENT}"
            )
        return _check(a ** int(b), expr)
    raise ZephyrError(
        f"calculator: {expr!r} is not plain arithmetic (numbers, + - * / **, parentheses only)"
    )


def evaluate(expr: str) -> Fraction:
    """The exact value of an arithmetic expression; anything else raises ZephyrError.

    Accepts numbers, + - * / ** (also × ÷ − ^ ² ³), unary minus and parentheses; no names,
    calls, attributes or strings, and no `eval`: the parsed tree is walked against a whitelist.
    """
    if not isinstance(expr, str) or not expr.strip() or len(expr) > MAX_CHARS:
        raise ZephyrError(f"calculator: give a non-empty expression of at most {MAX_CHARS} chars")
    try:
        tree = ast.parse(_ascii(expr).strip(), mode="eval")
    except (SyntaxError, ValueError):
        raise ZephyrError(f"calculator: {expr!r} is not an arithmetic expression") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ZephyrError(f"calculator: {expr!r} has more than {MAX_NODES} parts")
    return _eval(tree.body, expr)


def format_value(x: Fraction, places: int = 4) -> str:
    """Exact decimal when it terminates within `places`+2 digits, else rounded to `places`."""
    if x.denominator == 1:
        return str(x.numerator)
    for p in range(1, places + 3):
        if (x * 10**p).denominator == 1:
            return f"{Decimal(x.numerator) / Decimal(x.denominator):.{p}f}"
    n = round(x * 10**places)
    text = f"{Decimal(n) / Decimal(10**places):.{places}f}".rstrip("0").rstrip(".")
    return text or "0"


def forced_continuation(text: str) -> str | None:
    """The hook: if `text` ends with an open `<<expr=`, the result and `>>`; otherwise None.

    None also when `expr` is not arithmetic the evaluator accepts: the model then goes on alone.
    """
    if not text.endswith("="):
        return None
    m = _OPEN.search(text)
    if m is None:
        return None
    try:
        return format_value(evaluate(m.group(1))) + ">>"
    except ZephyrError:
        return None


# --- annotating worked solutions -------------------------------------------------------------

_EXPR_TAIL = re.compile(r"[0-9.,()+\-−×÷*/^²³ ]+$")
_NUMBER_HEAD = re.compile(r"-?\d+(?:\.\d+)?")
_SEP = re.compile(r"(\s*[=≈]\s*)")
_EXPR_ONLY = re.compile(r"[0-9.,()+\-−×÷*/^²³ ]+")
_HAS_OP = re.compile(r"\d\s*[)]*\s*[+\-−×÷*/^]\s*[(]*\s*-?\.?\d|\d[²³]")


def _lhs(segment: str) -> str | None:
    """The arithmetic expression that ends `segment`, if it has an operator between numbers."""
    m = _EXPR_TAIL.search(segment)
    if m is None:
        return None
    tail = m.group(0)
    expr = tail.lstrip(" +-−×÷*/^),.").strip()
    if expr.count("(") != expr.count(")") or not _HAS_OP.search(expr):
        return None
    at = m.start() + len(tail) - len(tail.lstrip(" +-−×÷*/^),."))
    if at > 0 and segment[at - 1].isalpha():
        return None  # "x2 + 3": the tail belongs to a longer, symbolic expression
    return expr


def _rhs_matches(rhs: str, value: Fraction) -> bool:
    try:
        shown = Fraction(Decimal(rhs))
    except (InvalidOperation, ValueError):
        return False
    places = len(rhs.split(".")[1]) if "." in rhs else 0
    return shown == value or round(value, places) == shown


def _result(part: str) -> re.Match | None:
    """The number that starts `part` when it is a result (not the start of another expression)."""
    number = _NUMBER_HEAD.match(part)
    if number is None or part.startswith("<<"):
        return None
    rest = part[number.end() :].lstrip(" ")
    if rest[:1] and (rest[0] in "+-−×÷*/^²³(" or rest[0].isdigit()):
        return None
    return number


def _link(parts: list[str], i: int) -> tuple[int, str, Fraction] | None:
    """(index of the result part, expr, value) for the chain that starts after parts[i]."""
    expr = _lhs(parts[i])
    if expr is None:
        return None
    try:
        value = evaluate(expr)
    except ZephyrError:
        return None
    k = i + 2
    while k < len(parts):
        number = _result(parts[k])
        if number is not None:
            return (k, expr, value) if _rhs_matches(number.group(0), value) else None
        if not _EXPR_ONLY.fullmatch(parts[k]):
            return None
        k += 2
    return None


def annotate(text: str) -> str:
    """`a op b = c` steps become `a op b = <<a op b=c>>c` where c really is the value.

    A chain `e1 = e2 = ... = n` whose first expression already equals n collapses to
    `e1 = <<e1=n>>n`, so the calculator, not the model, does every step of it; otherwise the last
    link that is right is annotated. Wrong arithmetic (the rejected solutions' slips) stays
    unannotated, so an annotation never carries a wrong result.
    """
    parts = _SEP.split(text)  # text, sep, text, sep, ...
    out, i = [], 0
    while i < len(parts):
        out.append(parts[i])
        link = _link(parts, i) if i % 2 == 0 and i + 2 < len(parts) else None
        if link is None:
            i += 1
            continue
        k, expr, value = link
        out.append(parts[k - 1] if "\n" not in parts[i + 1] else parts[i + 1])
        out.append(f"<<{expr}={format_value(value)}>>{parts[k]}")
        i = k + 1
    return "".join(out)


def annotate_row(row: dict) -> dict:
    """A copy of a synthetic row with its worked solutions (output/chosen/rejected) annotated."""
    out = dict(row)
    for key in ("output", "chosen", "rejected"):
        if isinstance(out.get(key), str):
            out[key] = annotate(out[key])
    return out


def strip_annotations(text: str) -> str:
    """The text a student reads: every complete `<<...>>` removed."""
    return _ANNOTATION.sub("", text)


def count_annotations(text: str) -> int:
    return len(_ANNOTATION.findall(text))


class AnnotationFilter:
    """Streams text with annotations hidden: holds back from `<` until it knows what follows.

    Only a complete `<<expr=result>>` (one line, with `=`) is removed; `<` or `<<` that turns out
    to be something else (`a << 2` in code) is released as soon as that is known.
    """

    HOLD = MAX_CHARS + 40  # an open `<<` longer than this is not an annotation

    def __init__(self, show: bool = False):
        self.show, self.held = show, ""

    def feed(self, piece: str) -> str:
        if self.show:
            return piece
        text, out = self.held + piece, []
        self.held = ""
        while text:
            start = text.find("<")
            if start < 0:
                out.append(text)
                break
            out.append(text[:start])
            rest = text[start:]
            if rest == "<" or (rest.startswith("<<") and self._open(rest)):
                self.held = rest  # could still become an annotation
                break
            m = _ANNOTATION.match(rest)
            if m is not None:
                text = rest[m.end() :]
                continue
            out.append(rest[0])
            text = rest[1:]
        return "".join(out)

    def _open(self, rest: str) -> bool:
        """`rest` starts `<<` and may still close as an annotation."""
        return ">>" not in rest and "\n" not in rest and len(rest) <= self.HOLD

    def flush(self) -> str:
        held, self.held = self.held, ""
        return held


# --- whether a model was trained with the convention ------------------------------------------


def trained_with(spec: str | Path | None) -> bool:
    """True when the model dir (or its adapter/model sibling) carries the calculator marker."""
    if spec is None:
        return False
    path = Path(str(spec))
    if any((p / MARKER).is_file() for p in (path, path.parent / "model") if p.is_dir()):
        return True
    meta = path / "quantization.json"  # a quantized artifact: its source model decides
    if meta.is_file():
        source = (json.loads(meta.read_text()).get("source") or {}).get("path")
        return bool(source) and Path(source) != path and trained_with(source)
    return False


def training_marker(data_paths: list[Path], base: Any = None) -> dict | None:
    """The marker a training run writes: annotated training rows, or a base that had the marker."""
    rows = 0
    for path in data_paths:
        if Path(path).is_file():
            with open(path, encoding="utf-8") as f:
                rows += sum(1 for line in f if "<<" in line and ">>" in line)
    if rows == 0 and not trained_with(base):
        return None
    return {"convention": "gsm8k <<expr=result>>", "annotated_rows": rows, "base": str(base)}


def write_marker(model_dir: Path, marker: dict | None) -> None:
    if marker is not None and Path(model_dir).is_dir():
        (Path(model_dir) / MARKER).write_text(json.dumps(marker, indent=1) + "\n")


def with_calculator(
    next_piece: Callable[[str], str | None], text: str = "", max_steps: int = 512
) -> str:
    """A step-wise generation loop for any engine (llama.cpp, a remote API, a test double).

    `next_piece(text_so_far)` returns the engine's next piece of text (a token's text) or None at
    the end; whenever the text ends with an open `<<expr=`, the calculator writes the result
    instead of the engine. Returns the whole generated text (annotations included).
    """
    for _ in range(max_steps):
        forced = forced_continuation(text)
        piece = forced if forced is not None else next_piece(text)
        if piece is None:
            break
        text += piece
    return text


class CalculatorProcessor:
    """`forced_continuation` as a transformers logits processor, for every row of a batch.

    After each token it decodes the row's recent text; when the hook answers, the answer's token
    ids are forced one per step (all other logits -inf), so greedy and sampled decoding agree.
    """

    TAIL_TOKENS = 96  # enough to hold `<<expr=` of MAX_CHARS characters

    def __init__(self, tokenizer: Any, prompt_len: int):
        self.tok, self.prompt_len, self.queues = tokenizer, prompt_len, {}
        self.forced = 0  # annotations completed by the calculator (for logs and tests)

    def __call__(self, input_ids, scores):
        for r in range(input_ids.shape[0]):
            queue = self.queues.setdefault(r, [])
            if not queue:
                tail = input_ids[r, self.prompt_len :][-self.TAIL_TOKENS :].tolist()
                text = self.tok.decode(tail, skip_special_tokens=True) if tail else ""
                forced = forced_continuation(text)
                if forced is None:
                    continue
                queue.extend(self.tok.encode(forced, add_special_tokens=False))
                self.forced += 1
            tid = queue.pop(0)
            scores[r, :] = float("-inf")
            scores[r, tid] = 0.0
        return scores
