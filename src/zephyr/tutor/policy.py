"""The safety policy: blocked patterns on the student's input and the model's output.

A YAML file with a default `refusal` and a list of rules {name, where: input|output|both,
pattern, message?}. `check` returns the triggered rules; the caller refuses, stops generation and
logs each trigger with its rule name. The documented default ships as default_policy.yaml.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from zephyr.config import from_dict, load_yaml
from zephyr.errors import ZephyrError

DEFAULT_POLICY = Path(__file__).with_name("default_policy.yaml")


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

    def to_dict(self) -> dict:
        return {"rule": self.rule, "where": self.where}


class Policy:
    """Compiled rules; `check(text, "input" | "output")` lists what the text triggers."""

    def __init__(self, spec: PolicyFile, source: str = "<memory>"):
        self.source = source
        self.refusal = spec.refusal.strip()
        self.mcqa, self.practice = spec.mcqa, spec.practice
        self.rules: list[tuple[Rule, re.Pattern]] = []
        names = set()
        for i, rule in enumerate(spec.rules):
            if rule.name in names:
                raise ZephyrError(f"{source}: rule name '{rule.name}' is used twice; rename one")
            names.add(rule.name)
            try:
                compiled = re.compile(rule.pattern.strip(), re.IGNORECASE | re.DOTALL)
            except re.error as e:
                raise ZephyrError(
                    f"{source}: rules[{i}] ({rule.name}) has a bad pattern: {e}"
                ) from None
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
        return [
            Trigger(rule.name, where, (rule.message or self.refusal).strip())
            for rule, pattern in self.rules
            if rule.where in (where, "both") and pattern.search(text)
        ]
