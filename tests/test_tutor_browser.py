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


@pytest.fixture(scope="module")
def tiny(tiny_model):
    """The tiny model, on one torch thread (a hidden-64 model gains nothing from more; restored after)."""
    import torch

    from zephyr.models import load_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_model(tiny_model)
    torch.set_num_threads(threads)


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
