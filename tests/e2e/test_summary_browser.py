"""The summary page of a graded class (``autograder/summary.py``, the class of
``tests/fixtures/lms/build.py``) loaded offline in headless Chromium at a phone's and a desktop's width
(the browser helpers of ``test_book_browser``; the page's numbers: tests/unit/test_summary.py)."""

from __future__ import annotations

import functools
import http.server
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from test_book_browser import (ARTIFACTS, MEASURE, SCREENS, DevTools, _QuietHandler, _requests, _screenshot,
                               browser)  # noqa: F401  (browser: the fixture)
from test_summary import SCORED, out, page, totals  # noqa: F401  (out, page: the fixtures)

from autograder import summary


@pytest.fixture(scope="module")
def served(out: Path, page: str) -> Iterator[str]:  # noqa: F811  (the imported fixtures)
    """The output folder with its summary page, served on 127.0.0.1."""
    (out / summary.PAGE).write_text(page, encoding="utf-8")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(out)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/{summary.PAGE}"
    httpd.shutdown()
    httpd.server_close()


def errors(events: list[dict]) -> list[Any]:
    """Uncaught exceptions, console errors and the browser's own error log entries."""
    found = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            found.append(params["exceptionDetails"])
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            found.append(params.get("args"))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            found.append(params["entry"])
    return found


@pytest.mark.slow
@pytest.mark.parametrize("screen", SCREENS)
def test_the_summary_page_loads_offline_and_shows_the_histogram(browser: DevTools, served: str, out: Path,  # noqa: F811
                                                                screen: str) -> None:
    width, height, mobile = SCREENS[screen]
    browser.send("Log.enable")
    browser.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=mobile)
    first = len(browser.events)
    browser.send("Page.navigate", url=served)
    browser.wait_for("Page.loadEventFired", timeout=120, since=first)
    deadline = time.monotonic() + 60
    drawn = "Array.from(document.querySelectorAll('.plotly-graph-div')).every(gd => gd.querySelector('.main-svg'))"
    while not browser.evaluate(drawn) and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(0.5)  # responsive figures settle to their column's width
    bars = browser.evaluate("Array.from(document.getElementById('histogram')._fullData[0].y)")
    drawn_bars = browser.evaluate("document.querySelectorAll('#histogram .bars .point').length")
    book_article = "document.querySelector('.bd-article') || document.body"
    assert book_article in MEASURE  # measured here: the page's <main> (plotly's text tester lies off screen)
    state = browser.evaluate(MEASURE.replace(book_article, "document.querySelector('main')")
                             .replace("SCREEN_WIDTH", str(width)))
    ARTIFACTS.mkdir(exist_ok=True)
    _screenshot(browser, f"summary-{screen}", width)  # artifacts/summary-phone.png, summary-desktop.png
    events = browser.events[first:]
    assert errors(events) == []
    remote = [r["url"] for r in _requests(events).values() if not r["url"].startswith(("http://127.0.0.1", "data:"))]
    assert remote == []
    _, centres, counts = summary.bins(list(totals().values()), 8)
    assert bars == counts and drawn_bars == len(centres) and sum(bars) == len(SCORED)
    assert [f["title"] for f in state["figures"]] == ["Scores of 5 learners (out of 8)",
                                                      "Mean score per question (share of its points)"]
    assert [f["outside"] for f in state["figures"]] == [[], []]
    assert state["offScreen"] == [] and state["pageWidth"] <= width, state
