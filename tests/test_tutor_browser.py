"""The web page in a real browser: Playwright drives Debian's Chromium against a live server.

Type a question and see the streamed answer, answer an MCQA form, save a screenshot. In CI
(CI=true) a missing Chromium fails the test; elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from zephyr.tutor.audit import Audit
from zephyr.tutor.server import ServeConfig, create_app, running

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    path = os.environ.get("ZEPHYR_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        reason = "Chromium not found; install it with `apt-get install -y chromium` (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def test_chat_and_mcqa_in_chromium(tiny, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    executable = chromium_path()
    model, tok = tiny
    audit = Audit(tmp_path / "audit.sqlite")
    app = create_app(model, tok, "tiny", ServeConfig(token="browser-token", temperature=1.0), audit)
    with running(app) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone-sized screen
            external: list[str] = []
            page.on("request", lambda r: None if r.url.startswith(url) else external.append(r.url))
            page.goto(url)
            page.click("summary")
            page.fill("#token", "browser-token")
            page.dispatch_event("#token", "change")
            expect(page.locator("#model")).to_have_text("tiny")
            page.fill("#max-tokens", "40")

            # chat: the answer streams into the bubble, piece by piece
            page.fill("#question", "A car travels 150 km in 2.5 h. What is its average speed?")
            page.click("#send")
            answer = page.locator(".msg.assistant").last
            expect(answer).to_have_attribute("data-finish", "length", timeout=60_000)
            text = answer.inner_text()
            assert len(text.strip()) > 10
            row = audit.rows(limit=1)[0]
            assert row["response"] == text and row["completion_tokens"] == 40
            assert page.locator(".msg.user").inner_text().startswith("A car travels")

            # the page's layout fits the phone: no horizontal scrolling
            assert page.evaluate("document.documentElement.scrollWidth") <= 390

            # MCQA form
            page.click("#tab-mcq")
            page.fill("#mcq-question", "Which gas do plants take in for photosynthesis?")
            page.fill("#mcq-choices", "Oxygen\nCarbon dioxide\nNitrogen\nHelium")
            page.click("#mcq-submit")
            expect(page.locator("#mcq-answer")).to_have_text(
                __import__("re").compile(r"^[ABCD]\. (Oxygen|Carbon dioxide|Nitrogen|Helium)$"),
                timeout=30_000,
            )
            assert page.locator(".bar").count() == 4
            assert audit.rows(limit=1)[0]["endpoint"] == "mcqa"
            assert not page.locator("#error").is_visible()

            shot = tmp_path / "tutor.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 5_000
            assert external == []  # no CDN, nothing fetched from outside the server
        finally:
            browser.close()


def test_practice_tab_in_chromium(tiny, tmp_path):
    """The operator's policy opens the page on Practice; hints climb, the check is exact."""
    from playwright.sync_api import expect, sync_playwright

    from zephyr.tutor.policy import Policy

    executable = chromium_path()
    model, tok = tiny
    audit = Audit(tmp_path / "audit.sqlite")
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("practice: {default_mode: practice, reveal_answer: after_hints}\n")
    app = create_app(model, tok, "tiny", ServeConfig(), audit, Policy.load(policy_file))
    with running(app) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844})
            page.goto(url)
            expect(page.locator("#practice-panel")).to_be_visible()  # the policy's default mode
            page.fill(
                "#practice-question",
                "A train travels 150 km in 2.5 hours. What is its average speed in km/h?",
            )
            page.click("#practice-start")
            expect(page.locator(".step.source")).to_have_text("I can check your answer exactly.")
            page.click("#practice-reveal")
            expect(page.locator(".step.withheld")).to_have_count(1)
            for kind in ("nudge", "hint", "example"):
                page.click("#practice-hint")
                expect(page.locator(f".step.{kind}")).to_have_count(1)
            page.fill("#practice-answer", "19.5 km/h")
            page.click("#practice-check")
            expect(page.locator(".step.verdict.not-yet")).to_have_text(
                "Not yet. Look at your working again, or ask a hint."
            )
            page.fill("#practice-answer", "60 km/h")
            page.click("#practice-check")
            expect(page.locator(".step.verdict.correct")).to_have_text("Correct!")
            page.click("#practice-reveal")
            expect(page.locator(".step.answer")).to_contain_text("Answer: 60 km/h")
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            events = [r["finish_reason"] for r in reversed(audit.rows())]
            assert events[-3:] == ["check:not yet", "check:correct", "reveal:answer"]
        finally:
            browser.close()
