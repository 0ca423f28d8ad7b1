"""The safety policy: blocked patterns on the student's input and the model's output.

A YAML file with a default `refusal` and a list of rules {name, where: input|output|both,
pattern, message?}. `check` returns the triggered rules; the caller refuses, stops generation and
logs each trigger with its rule name. The documented default ships as default_policy.yaml.

Patterns compile with the `regex` package and every search has a time bound (`timeout_s`): one
catastrophic pattern in an operator's file cannot freeze the server. A search that runs out of
time counts as a trigger (fail closed) flagged `timeout`, so the audit log shows the rule to fix.
A pattern that matches an empty string would trigger on every text and is refused at load.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import regex

from zephyr.config import from_dict, load_yaml
from zephyr.errors import ZephyrError

DEFAULT_POLICY = Path(__file__).with_name("default_policy.yaml")
PROBES = ("", "a", " ", "1", "a 1.\n")  # texts on which a sane rule finds no empty match
log = logging.getLogger("zephyr.tutor")


@dataclass
class Rule:
    name: str
    pattern: str
    where: Literal["input", "output", "both"] = "both"
    message: str | None = None


@dataclass
class McqaPolicy:
    debias: str = "cyclic"  # "cyclic" (average over the choices' cyclic shifts) or "none"
    min_confidence: float = 0.0  # below this calibrated probability the tutor says it is unsure


@dataclass
class PracticePolicy:
    default_mode: Literal["normal", "practice"] = "normal"  # the mode chat and the page start in
    reveal_answer: Literal["never", "after_hints", "always"] = "after_hints"
    worked_example: bool = True  # the third rung: a solved problem of the same kind


@dataclass
class PolicyFile:
    refusal: str = "I can't help with that."
    rules: list[Rule] = field(default_factory=list)
    mcqa: McqaPolicy = field(default_factory=McqaPolicy)
    practice: PracticePolicy = field(default_factory=PracticePolicy)


@dataclass
class Trigger:
    rule: str
    where: str
    message: str
    timeout: bool = False  # the search ran out of time: refused as if it matched

    def to_dict(self) -> dict:
        out = {"rule": self.rule, "where": self.where}
        return {**out, "timeout": True} if self.timeout else out


class Policy:
    """Compiled rules; `check(text, "input" | "output")` lists what the text triggers."""

    def __init__(self, spec: PolicyFile, source: str = "<memory>", timeout_s: float = 0.25):
        self.source, self.timeout_s = source, timeout_s
        self.refusal = spec.refusal.strip()
        self.mcqa, self.practice = spec.mcqa, spec.practice
        self.rules: list[tuple[Rule, regex.Pattern]] = []
        names = set()
        for i, rule in enumerate(spec.rules):
            if rule.name in names:
                raise ZephyrError(f"{source}: rule name '{rule.name}' is used twice; rename one")
            names.add(rule.name)
            try:
                compiled = regex.compile(rule.pattern.strip(), regex.IGNORECASE | regex.DOTALL)
            except regex.error as e:
                raise ZephyrError(
                    f"{source}: rules[{i}] ({rule.name}) has a bad pattern: {e}"
                ) from None
            if any(_empty_match(compiled, probe) for probe in PROBES):
                raise ZephyrError(
                    f"{source}: rules[{i}] ({rule.name}) matches an empty string, so it would "
                    f"trigger on every text: make the pattern require at least one character"
                )
            self.rules.append((rule, compiled))

    @classmethod
    def load(cls, path: str | Path | None = None) -> Policy:
        """Read a policy YAML (the shipped default when `path` is None)."""
        path = Path(path) if path else DEFAULT_POLICY
        if not path.exists():
            raise ZephyrError(f"policy file not found: {path}; pass an existing YAML with --policy")
        return cls(from_dict(PolicyFile, load_yaml(path), str(path)), str(path))

    @classmethod
    def empty(cls) -> Policy:
        return cls(PolicyFile(), "<none>")

    def check(self, text: str, where: Literal["input", "output"]) -> list[Trigger]:
        """The rules `text` triggers; each search is bounded by `timeout_s` seconds."""
        hits = []
        for rule, pattern in self.rules:
            if rule.where not in (where, "both"):
                continue
            try:
                found, late = pattern.search(text, timeout=self.timeout_s) is not None, False
            except TimeoutError:
                log.warning("policy rule %s ran out of time (%.2fs)", rule.name, self.timeout_s)
                found, late = True, True
            if found:
                hits.append(Trigger(rule.name, where, (rule.message or self.refusal).strip(), late))
        return hits


def _empty_match(pattern: regex.Pattern, probe: str) -> bool:
    try:
        return any(m.end() == m.start() for m in pattern.finditer(probe, timeout=1.0))
    except TimeoutError:
        return False
