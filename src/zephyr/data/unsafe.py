"""A small, documented blocklist for unsafe text in the text a model is trained to produce.

Only the target side is checked (SFT assistant turns, the `chosen` reply): a harmful request answered
with a refusal is good data, and a harmful `rejected` reply is the point of a preference pair. The
list is deliberately short and specific (phrases, not single words like "kill", which MMLU history
and biology use innocently); it catches instructions for serious harm and self-harm encouragement.
"""

from __future__ import annotations

import re

BLOCKLIST: tuple[str, ...] = (
    # weapons and mass harm
    r"how to (?:make|build) (?:a |an )?(?:pipe )?bomb",
    r"(?:make|build|assemble) (?:a |an )?(?:pipe bomb|explosive device|molotov cocktail)",
    r"(?:synthesi[sz]e|make|produce) (?:sarin|ricin|vx nerve agent|mustard gas|anthrax)",
    # drugs
    r"(?:cook|make|synthesi[sz]e) (?:crystal )?meth(?:amphetamine)?\b",
    # self-harm encouragement
    r"\byou should kill yourself\b",
    r"\bgo kill yourself\b",
    r"\bbest way to (?:kill|hang) yourself\b",
    # sexual content involving minors
    r"\bchild (?:porn|pornography|sexual abuse material)\b",
    # credential theft / malware
    r"\b(?:steal|harvest) (?:someone'?s |their )?(?:passwords|credit card numbers)\b",
    r"\bwrite (?:a |some )?(?:ransomware|keylogger)\b",
)
PATTERN = re.compile("|".join(f"(?:{p})" for p in BLOCKLIST))
# every phrase holds one of these words: a substring test skips the regex for almost all rows
KEYWORDS = (
    "bomb",
    "explosive",
    "molotov",
    "sarin",
    "ricin",
    "nerve agent",
    "mustard gas",
    "anthrax",
    "meth",
    "yourself",
    "child ",
    "passwords",
    "credit card",
    "ransomware",
    "keylogger",
)


def flagged(text: str) -> str | None:
    """The blocklisted phrase found in `text`, or None."""
    text = text.lower()
    if not any(k in text for k in KEYWORDS):
        return None
    m = PATTERN.search(text)
    return m.group(0) if m else None
