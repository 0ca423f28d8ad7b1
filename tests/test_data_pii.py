"""PII redaction: a table of true positives (redacted) and false positives (left alone)."""

from __future__ import annotations

import pytest

from zephyr.data.pii import luhn, redact

REDACTED = [
    ("mail jane.doe+work@example.co.uk today", "mail <EMAIL> today", "EMAIL"),
    ("Contact: bob@mail.example.com.", "Contact: <EMAIL>.", "EMAIL"),
    ("call (555) 123-4567 now", "call <PHONE> now", "PHONE"),
    ("call 555-123-4567.", "call <PHONE>.", "PHONE"),
    ("ring +44 20 7946 0958 please", "ring <PHONE> please", "PHONE"),
    ("server 93.184.216.34 is down", "server <IP> is down", "IP"),
    ("DNS 8.8.8.8, backup 1.1.1.1", "DNS <IP>, backup <IP>", "IP"),
    ("card 4111 1111 1111 1111 ok", "card <CARD> ok", "CARD"),
    ("card 4111-1111-1111-1111.", "card <CARD>.", "CARD"),
    ("pay with 5500000000000004", "pay with <CARD>", "CARD"),
    ("my Visa number is 4111111111111111", "my Visa number is <CARD>", "CARD"),
    ("amex 3782 822463 10005", "amex <CARD>", "CARD"),
    (
        "git clone https://alice:s3cret@github.com/x/y.git",
        "git clone https://<CREDENTIALS>@github.com/x/y.git",
        "CREDENTIALS",
    ),
    ("ftp://user:pw@files.example.org/a", "ftp://<CREDENTIALS>@files.example.org/a", "CREDENTIALS"),
]

KEPT = [
    "card 4111 1111 1111 1112 fails the Luhn check",  # 16 digits, not a card
    "4111111111111112",
    "the sum is 1007411131329104.",  # passes no issuer prefix
    "The result is:\n\n4212883012996",  # Luhn-valid Visa-like digits, but no card context
    "472547338 + 960397912423686 = 960398384971024",  # arithmetic, not cards
    "# 3 6 9 12 15 18 21 24 27 30",  # a times table
    "version 1.2.3.4",
    "upgrade to v10.0.0.1",
    "Python 3.11.4 and numpy 1.26.4",
    "see §15.12.2.7 of the spec",
    "bind to 0.0.0.0 or 127.0.0.1 or 192.168.1.1",  # unspecified, loopback, private
    "256.1.1.1 is not an address",
    "x = 3.14159 and y = 2.71828",
    "the years 1999-2000 and 12345 items",
    "ISBN 978-3-16-148410-0",
    "on 2023-01-15 at 12:30",
    "total 1,234,567.89 dollars",
    "https://github.com/x/y.git and user@ host",
    "a ratio of 2.5:1",
]


@pytest.mark.parametrize(("text", "expected", "label"), REDACTED)
def test_redacts(text, expected, label):
    out, counts = redact(text)
    assert out == expected
    assert counts[label] == expected.count(f"<{label}>") and sum(counts.values()) == counts[label]


@pytest.mark.parametrize("text", KEPT)
def test_leaves_alone(text):
    assert redact(text) == (text, {})


def test_luhn():
    assert luhn("4111111111111111") and luhn("79927398713")
    assert not luhn("4111111111111112") and not luhn("79927398710")
