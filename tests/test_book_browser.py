"""The built book reads offline in a real browser: headless Chromium, network off except localhost.

Builds the book with the jupyter-book command of ``make book`` and the course model (the execution
cache makes an unchanged rebuild take seconds), serves ``_build/html`` on 127.0.0.1, loads the
residual-patching chapter in Debian's ``chromium`` through the Chrome DevTools protocol, and checks
that the plotly heatmap rendered, that MathJax typeset the maths, and that no script request failed.
The screenshot is kept as ``artifacts/residual_patching.png``. Needs ``apt-get install chromium``.
"""

from __future__ import annotations

import base64
import functools
import http.server
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
PAGE = "book/residual_patching.html"
ARTIFACTS = ROOT / "artifacts"
BUILD_COMMAND = [str(ROOT / ".venv" / "bin" / "jupyter-book"), "build", ".", "-W", "-n", "--keep-going"]

pytestmark = pytest.mark.slow


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "Debian's chromium is needed for the browser test: apt-get install -y chromium"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def built_book() -> Path:
    """The book built offline with the course model (reusing the execution cache)."""
    jupyter_book = Path(BUILD_COMMAND[0])
    command = BUILD_COMMAND if jupyter_book.exists() else ["jupyter-book", *BUILD_COMMAND[1:]]
    env = {**os.environ, "PATCHLAB_MODEL": "ioi-mini", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, f"book build failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    assert (HTML / PAGE).exists()
    return HTML


@pytest.fixture(scope="module")
def server(built_book: Path) -> Iterator[str]:
    """``_build/html`` served on 127.0.0.1 (a free port)."""
    handler = functools.partial(_QuietHandler, directory=str(built_book))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass


class DevTools:
    """A minimal Chrome DevTools protocol client over one page session (flattened targets)."""

    def __init__(self, ws_url: str) -> None:
        import websocket  # websocket-client

        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.ids = itertools.count(1)
        self.events: list[dict] = []
        self.session: str | None = None

    def send(self, method: str, **params: Any) -> dict:
        call_id = next(self.ids)
        message: dict[str, Any] = {"id": call_id, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == call_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for event in self.events[seen:]:
                if event.get("method") == method:
                    return event
            seen = len(self.events)
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                self.events.append(json.loads(self.ws.recv()))
            except Exception:  # websocket timeout: check the deadline again
                pass
        raise TimeoutError(f"no {method} within {timeout} s")

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result["result"].get("value")

    def close(self) -> None:
        self.ws.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[DevTools]:
    """Headless Chromium with every host but 127.0.0.1 unreachable, driven over DevTools."""
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    process = subprocess.Popen(
        [
            _chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--remote-debugging-port=0",
            # the network is off: no name resolves and no proxy answers, except for 127.0.0.1 itself
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1",
            "--window-size=1400,1800", "about:blank",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        ws_url = None
        deadline = time.monotonic() + 60
        while ws_url is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line and process.poll() is not None:
                break
            found = re.search(r"DevTools listening on (ws://\S+)", line)
            ws_url = found.group(1) if found else None
        assert ws_url, "chromium did not start its DevTools endpoint"
        tools = DevTools(ws_url)
        target = tools.send("Target.createTarget", url="about:blank")["targetId"]
        tools.session = tools.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Network", "Runtime"):
            tools.send(f"{domain}.enable")
        yield tools
        tools.close()
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def loaded_page(browser: DevTools, server: str) -> dict[str, Any]:
    """Load the residual-patching chapter, wait for plotly and MathJax, keep a screenshot."""
    browser.send("Page.navigate", url=f"{server}/{PAGE}")
    browser.wait_for("Page.loadEventFired", timeout=120)
    state: dict[str, Any] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = browser.evaluate("""(async () => {
            if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
            return {
              plots: document.querySelectorAll('.plotly-graph-div .main-svg').length,
              heatmaps: document.querySelectorAll('.plotly-graph-div .heatmaplayer image').length,
              heatmapTitle: Array.from(document.querySelectorAll('.plotly-graph-div .gtitle')).map(e => e.textContent),
              xTicks: Array.from(document.querySelectorAll('.plotly-graph-div .xtick text')).map(e => e.textContent),
              maths: document.querySelectorAll('mjx-container').length,
              mathsErrors: document.querySelectorAll('mjx-merror').length,
              mathSpans: document.querySelectorAll('span.math, div.math').length,
              mathJaxVersion: (window.MathJax && MathJax.version) || null,
            };
        })()""")
        if state["heatmaps"] and state["maths"] >= state["mathSpans"] > 0:
            break
        time.sleep(0.5)
    browser.evaluate("document.querySelector('.plotly-graph-div').scrollIntoView()")
    time.sleep(0.5)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = browser.send("Page.captureScreenshot", format="png")["data"]
    (ARTIFACTS / "residual_patching.png").write_bytes(base64.b64decode(shot))
    state["events"] = list(browser.events)
    return state


def _requests(events: list[dict]) -> dict[str, dict]:
    """Request id -> {url, type, failed, status} from the Network events."""
    requests: dict[str, dict] = {}
    for event in events:
        params = event.get("params", {})
        if event.get("method") == "Network.requestWillBeSent":
            requests[params["requestId"]] = {"url": params["request"]["url"], "type": params.get("type")}
        elif event.get("method") == "Network.responseReceived" and params["requestId"] in requests:
            requests[params["requestId"]]["status"] = params["response"]["status"]
        elif event.get("method") == "Network.loadingFailed" and params["requestId"] in requests:
            requests[params["requestId"]]["failed"] = params.get("errorText")
    return requests


def test_heatmap_is_rendered(loaded_page: dict[str, Any]) -> None:
    assert loaded_page["plots"] >= 1, "no plotly figure was drawn"
    assert loaded_page["heatmaps"] >= 1, "the patching heatmap has no heatmap layer"
    assert any("patching resid_pre" in title for title in loaded_page["heatmapTitle"]), loaded_page["heatmapTitle"]
    assert any("(S2)" in tick for tick in loaded_page["xTicks"]), "the heatmap's positions carry no token labels"


def test_maths_is_typeset_by_the_books_own_mathjax(loaded_page: dict[str, Any]) -> None:
    assert loaded_page["mathJaxVersion"], "MathJax did not load"
    assert loaded_page["mathSpans"] > 0, "the page has no maths to typeset"
    assert loaded_page["maths"] >= loaded_page["mathSpans"], "some maths was not typeset"
    assert loaded_page["mathsErrors"] == 0


def test_no_script_request_fails_and_none_leaves_the_machine(loaded_page: dict[str, Any]) -> None:
    requests = _requests(loaded_page["events"]).values()
    scripts = [r for r in requests if r["type"] == "Script"]
    assert any("mathjax" in r["url"] for r in scripts), "the book's MathJax was not requested"
    failed = [r for r in scripts if r.get("failed") or r.get("status", 200) >= 400]
    assert failed == [], f"failed script requests: {failed}"
    remote = [r["url"] for r in requests if not r["url"].startswith(("http://127.0.0.1", "data:", "blob:", "about:"))]
    assert remote == [], f"requests that need the network: {remote}"


def test_screenshot_is_kept(loaded_page: dict[str, Any]) -> None:
    shot = ARTIFACTS / "residual_patching.png"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
