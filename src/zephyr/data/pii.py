"""PII redaction to placeholders: <EMAIL>, <PHONE>, <IP>, <CARD> (Luhn-checked), and credentials in URLs.

`redact(text) -> (text, counts)`; the tutor's audit log uses the same function. Patterns are kept
conservative: a false positive corrupts training text (a version string, a 16-digit number that is
not a card), a false negative leaves one address in a public data set.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter

# scheme://user:password@host -> scheme://<CREDENTIALS>@host (before EMAIL: the tail looks like one)
URL_CREDS = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)[^\s/@:]+:[^\s/@]+@(?=[^\s/@])")
EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}\b")
OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
IPV4 = re.compile(rf"(?<![\w.]){OCTET}(?:\.{OCTET}){{3}}(?![\w.]*\d)(?!\.\w)")
# a version string ("v1.2.3.4", "version 10.0.0.1") is not an address
VERSION_BEFORE = re.compile(r"\b(?:v|version|ver\.?|release|build)\s*$", re.IGNORECASE)
# 13-19 digits in one run, or in groups of four (Amex: 4-6-5); then `is_card` checks Luhn, issuer
# prefix and that it is not a number in a calculation (arithmetic data has many long numbers)
CARD = re.compile(
    r"(?<![\w.,])(?:\d{13,19}|\d{4}([ -])\d{4}\1\d{4}\1\d{1,7}|\d{4}([ -])\d{6}\2\d{5})(?![\w]|[.,]\d)"
)
ISSUER = re.compile(r"4|5[1-5]|2[2-7]|3[47]|6(?:011|5)")  # Visa, Mastercard, Amex, Discover
MATH = set("+-*/=×÷^<>")
# an ungrouped run of digits is a card only next to words like these (math data has long numbers)
CARD_WORDS = re.compile(r"card|visa|mastercard|amex|credit|debit|pay|cc\b|account", re.IGNORECASE)
PHONE = re.compile(
    r"(?<![\w+.-])(?:"
    r"\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,4}"  # +44 20 7946 0958
    r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}"  # (555) 123-4567
    r"|\d{3}[.-]\d{3}[.-]\d{4}"  # 555-123-4567
    r")(?![\w-]|\.\d)"
)

DIGITS3 = re.compile(r"\d\d\d")
DOTTED = re.compile(r"\d\.\d")


def is_card(m: re.Match) -> bool:
    digits = re.sub(r"\D", "", m.group(0))
    around = (
        m.string[max(0, m.start() - 3) : m.start()] + m.string[m.end() : m.end() + 3]
    ).replace(" ", "")
    if not (13 <= len(digits) <= 19 and ISSUER.match(digits) and luhn(digits)) or MATH & set(
        around
    ):
        return False
    grouped = len(digits) < len(m.group(0))  # 4111 1111 1111 1111 is card-shaped on its own
    return grouped or bool(CARD_WORDS.search(m.string[max(0, m.start() - 40) : m.start()]))


def not_an_address(m: re.Match) -> bool:
    """A version or section number ("v1.2.3.4", "§15.12.2.7"), or a private, loopback or unspecified
    address (192.168.1.1, 0.0.0.0), which identifies nobody."""
    before = m.string[: m.start()]
    return (
        bool(VERSION_BEFORE.search(before))
        or before.endswith("§")
        or not ipaddress.ip_address(m.group(0)).is_global
    )


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def redact(text: str) -> tuple[str, dict[str, int]]:
    """Text with PII replaced by placeholders, and how many of each kind were replaced."""
    counts: Counter = Counter()

    def sub(pattern: re.Pattern, label: str, text: str, keep=None) -> str:
        def repl(m: re.Match) -> str:
            if keep is not None and keep(m):
                return m.group(0)
            counts[label] += 1
            return f"{m.group(1)}<{label}>@" if label == "CREDENTIALS" else f"<{label}>"

        return pattern.sub(repl, text)

    if "://" in text:
        text = sub(URL_CREDS, "CREDENTIALS", text)
    if "@" in text:
        text = sub(EMAIL, "EMAIL", text)
    if DIGITS3.search(text):  # a card or a phone number holds three digits in a row
        text = sub(CARD, "CARD", text, keep=lambda m: not is_card(m))
        text = sub(PHONE, "PHONE", text)
    if DOTTED.search(text):  # an IPv4 address holds digit.digit
        text = sub(IPV4, "IP", text, keep=not_an_address)
    return text, dict(counts)
