"""The built book reads offline in a real browser, on a desktop and on a phone.

Builds the book with the jupyter-book command of ``make book`` and the course model (the execution
cache makes an unchanged rebuild take seconds), serves ``_build/html`` on 127.0.0.1 and loads every
page in Debian's headless ``chromium`` (network off except 127.0.0.1) through the Chrome DevTools
protocol, at 1366x900 and as a 390x844 phone. It checks that the plotly figures and the maths render,
that no script request fails or leaves the machine, that the book serves one plotly.js for all its
pages, that no figure's title, legend, tick label or colour bar runs out of its figure or off the
screen, that every heatmap labels every row and column, that legends match their traces, and that no
text or table runs off the screen (wide ones scroll or wrap inside their box). Screenshots of every
page at both widths are kept in ``artifacts/`` (``PAGE-phone.png``, ``PAGE-desktop.png``, long pages
in parts). Needs ``apt-get install chromium``.
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
# name: (width, height, mobile)
SCREENS = {"desktop": (1366, 900, False), "phone": (390, 844, True)}
SHOT_HEIGHT = 8000  # px per screenshot; longer pages are kept in parts
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

    def wait_for(self, method: str, timeout: float, since: int = 0) -> dict:
        """The first ``method`` event from ``self.events[since:]`` on, waiting for it if need be."""
        deadline = time.monotonic() + timeout
        seen = since
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
            "--hide-scrollbars", "--window-size=1366,900", "about:blank",
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



# Measured in the page after it has drawn: every plotly figure, every heatmap, and whatever in the
# article runs off the screen. A box that scrolls (overflow-x auto or scroll) and fits the screen
# may hold wider content; anything else past the screen's edge is cut or makes the page scroll sideways.
MEASURE = r"""((vw) => {  // vw: the screen's width (a phone widens its viewport to content that is too wide)
  const box = e => { const r = e.getBoundingClientRect(); return {l: r.left, r: r.right, t: r.top, b: r.bottom, w: r.width, h: r.height}; };
  const describe = e => (e.tagName + '.' + (e.getAttribute('class') || '').split(' ')[0] + ' ' + (e.textContent || '').trim().slice(0, 60));
  const figures = Array.from(document.querySelectorAll('.plotly-graph-div')).map(gd => {
    const d = box(gd);
    const outside = [];
    if (d.l < -1 || d.r > vw + 1) outside.push('the figure itself ' + JSON.stringify(d));
    for (const sel of ['.gtitle', '.legend', '.xtick text', '.ytick text', '.g-xtitle', '.g-ytitle', '.colorbar', '.annotation']) {
      for (const e of gd.querySelectorAll(sel)) {
        const r = box(e);
        if (r.w === 0 && r.h === 0) continue;
        if (r.l < d.l - 1 || r.r > d.r + 1 || r.t < d.t - 1 || r.b > d.b + 1 || r.r > vw + 1) outside.push(sel + ' ' + describe(e) + ' ' + JSON.stringify(r) + ' in ' + JSON.stringify(d));
      }
    }
    const title = gd.querySelector('.gtitle'), modebar = gd.querySelector('.modebar');
    if (title && modebar) {
      const t = box(title), m = box(modebar);
      if (m.w > 0 && t.l < m.r && m.l < t.r && t.t < m.b && m.t < t.b) outside.push('the title runs under the mode bar');
    }
    // each heatmap's own subplot (stacked panels have one each), its ticks counted there
    const ticks = (t, axis) => {
      const id = (axis === 'x' ? t.xaxis : t.yaxis) || axis;  // x, x2, ...: plotly's tick class is id + 'tick'
      const sub = gd.querySelector('.subplot.' + (t.xaxis || 'x') + (t.yaxis || 'y')) || gd;
      return Array.from(sub.querySelectorAll('.' + axis + 'axislayer-above .' + id + 'tick text'))
        .filter(e => e.textContent.trim()).length;
    };
    const heatmaps = gd._fullData.filter(t => t.type === 'heatmap').map(t => ({
      rows: t.z.length, columns: t.z[0].length, zmin: t.zmin, zmax: t.zmax,
      colorbar: t.colorbar && t.colorbar.title && t.colorbar.title.text,
      xticks: ticks(t, 'x'), yticks: ticks(t, 'y'),
    }));
    const colours = {};
    for (const t of gd._fullData) {
      if (t.type === 'heatmap' || !t.name) continue;
      const c = (t.line && t.line.color) || (t.marker && t.marker.color);
      (colours[t.name] = colours[t.name] || new Set()).add(JSON.stringify(c));
    }
    const legendMismatch = Object.entries(colours).filter(([n, c]) => c.size > 1).map(([n]) => n);
    return {title: title ? title.textContent : '', outside, heatmaps, legendMismatch};
  });
  const article = document.querySelector('.bd-article') || document.body;
  const scrollsInABox = e => {  // some ancestor of e in the article scrolls sideways and fits the screen
    for (let a = e.parentElement; a && a !== article; a = a.parentElement) {
      const o = getComputedStyle(a).overflowX;
      if (o === 'auto' || o === 'scroll') { const s = box(a); return s.r <= vw + 1 && s.l >= -1; }
    }
    return false;
  };
  const offScreen = [];
  for (const e of article.querySelectorAll('*')) {
    if (e.closest('.plotly-graph-div')) continue;
    const r = box(e);
    if (!(r.w === 0 && r.h === 0) && (r.r > vw + 1 || r.l < -1) && !scrollsInABox(e)) {
      offScreen.push('off the screen: ' + describe(e) + ' ' + JSON.stringify(r));
    }
    // content wider than a box that does not scroll spills out of it or is cut (MathJax sizes its
    // own boxes to the pixel and keeps a hidden copy for screen readers: not counted)
    const o = getComputedStyle(e).overflowX;
    if (e.clientWidth > 0 && e.scrollWidth > e.clientWidth + 1 && o !== 'auto' && o !== 'scroll'
        && !e.closest('mjx-container, .math') && !scrollsInABox(e)) {
      offScreen.push('wider than its box (overflow ' + o + '): ' + describe(e) + ' ' + e.scrollWidth + ' > ' + e.clientWidth);
    }
  }
  const scripts = Array.from(document.scripts);
  return {
    figures, offScreen: offScreen.slice(0, 20),
    pageWidth: document.documentElement.scrollWidth, viewport: vw,
    plotlyScripts: scripts.filter(s => /plotly/i.test(s.src)).map(s => new URL(s.src).pathname),
    inlinePlotly: scripts.filter(s => !s.src && s.text.includes('plotly.js v')).length,
    plots: document.querySelectorAll('.plotly-graph-div .main-svg').length,
    heatmapLayers: document.querySelectorAll('.plotly-graph-div .heatmaplayer image').length,
    maths: document.querySelectorAll('mjx-container').length,
    mathsErrors: document.querySelectorAll('mjx-merror').length,
    mathSpans: document.querySelectorAll('span.math, div.math').length,
    mathJaxVersion: (window.MathJax && MathJax.version) || null,
  };
})(SCREEN_WIDTH)"""

READY = r"""(async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  const figures = Array.from(document.querySelectorAll('.plotly-graph-div'));
  return figures.every(gd => gd._fullLayout && gd.querySelector('.main-svg'))
    && document.querySelectorAll('mjx-container').length >= document.querySelectorAll('span.math, div.math').length;
})()"""


def _pages(html: Path) -> list[str]:
    return sorted(p.relative_to(html).as_posix() for p in (html / "book").glob("*.html"))


def _screenshot(browser: DevTools, stem: str, width: int) -> None:
    """The whole page as PNG, in parts of SHOT_HEIGHT px."""
    height = browser.evaluate("document.documentElement.scrollHeight")
    for part, top in enumerate(range(0, height, SHOT_HEIGHT)):
        clip = {"x": 0, "y": top, "width": width, "height": min(SHOT_HEIGHT, height - top), "scale": 1}
        shot = browser.send("Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip)["data"]
        name = f"{stem}.png" if part == 0 else f"{stem}-{part + 1}.png"
        (ARTIFACTS / name).write_bytes(base64.b64decode(shot))


@pytest.fixture(scope="module")
def visits(browser: DevTools, server: str, built_book: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Every page at every screen size: what MEASURE finds, the page's network events, screenshots."""
    ARTIFACTS.mkdir(exist_ok=True)
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for screen, (width, height, mobile) in SCREENS.items():
        browser.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=mobile)
        for page in _pages(built_book):
            first_event = len(browser.events)
            browser.send("Page.navigate", url=f"{server}/{page}")
            browser.wait_for("Page.loadEventFired", timeout=120, since=first_event)
            deadline = time.monotonic() + 60
            while not browser.evaluate(READY) and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(0.5)  # responsive figures settle to their column's width
            state = browser.evaluate(MEASURE.replace("SCREEN_WIDTH", str(width)))
            state["events"] = browser.events[first_event:]
            found[(page, screen)] = state
            _screenshot(browser, f"{Path(page).stem}-{screen}", width)
    measured = {f"{page} ({screen})": {k: v for k, v in state.items() if k != "events"} for (page, screen), state in found.items()}
    (ARTIFACTS / "browser_checks.json").write_text(json.dumps(measured, indent=1))
    return found


@pytest.fixture(scope="module")
def loaded_page(visits: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    return visits[(PAGE, "desktop")]


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
    assert loaded_page["heatmapLayers"] >= 1, "the patching heatmap has no heatmap layer"
    titles = [f["title"] for f in loaded_page["figures"]]
    assert any("patching resid_pre" in title for title in titles), titles


def test_maths_is_typeset_by_the_books_own_mathjax(loaded_page: dict[str, Any]) -> None:
    assert loaded_page["mathJaxVersion"], "MathJax did not load"
    assert loaded_page["mathSpans"] > 0, "the page has no maths to typeset"
    assert loaded_page["maths"] >= loaded_page["mathSpans"], "some maths was not typeset"
    assert loaded_page["mathsErrors"] == 0


def test_no_script_request_fails_and_none_leaves_the_machine(visits: dict[tuple[str, str], dict[str, Any]]) -> None:
    for (page, screen), state in visits.items():
        requests = _requests(state["events"]).values()
        scripts = [r for r in requests if r["type"] == "Script"]
        failed = [r for r in scripts if r.get("failed") or r.get("status", 200) >= 400]
        assert failed == [], f"{page} ({screen}): failed script requests: {failed}"
        remote = [r["url"] for r in requests if not r["url"].startswith(("http://127.0.0.1", "data:", "blob:", "about:"))]
        assert remote == [], f"{page} ({screen}): requests that need the network: {remote}"
    first = _requests(visits[(PAGE, "desktop")]["events"]).values()
    assert any("mathjax" in r["url"] for r in first if r["type"] == "Script"), "the book's MathJax was not requested"


def test_one_plotly_js_for_the_whole_book(visits: dict[tuple[str, str], dict[str, Any]], built_book: Path) -> None:
    with_figures = {page for (page, _), state in visits.items() if state["figures"]}
    assert len(with_figures) >= 4, f"plotly figures on {sorted(with_figures)} only"
    sources = {src for state in visits.values() for src in state["plotlyScripts"]}
    assert sources == {"/_static/plotly.min.js"}, sources
    assert all(state["inlinePlotly"] == 0 for state in visits.values()), "a page embeds its own plotly.js"
    copies = [p for p in built_book.rglob("*") if p.is_file() and p.suffix in (".html", ".js") and b"* plotly.js v" in p.read_bytes()]
    assert [p.relative_to(built_book).as_posix() for p in copies] == ["_static/plotly.min.js"]


@pytest.mark.parametrize("screen", SCREENS)
def test_figures_fit_their_column(visits: dict[tuple[str, str], dict[str, Any]], screen: str) -> None:
    """No title, legend, tick label, axis title or colour bar outside its figure or off the screen."""
    problems = [
        f"{page}: figure {figure['title']!r}: {what}"
        for (page, s), state in visits.items() if s == screen
        for figure in state["figures"] for what in figure["outside"]
    ]
    assert problems == [], "\n".join(problems[:20])


@pytest.mark.parametrize("screen", SCREENS)
def test_every_heatmap_labels_every_row_and_column(visits: dict[tuple[str, str], dict[str, Any]], screen: str) -> None:
    heatmaps = [(page, h) for (page, s), state in visits.items() if s == screen for f in state["figures"] for h in f["heatmaps"]]
    assert len(heatmaps) >= 5, heatmaps
    for page, h in heatmaps:
        assert h["xticks"] == h["columns"] and h["yticks"] == h["rows"], f"{page}: {h}"


def test_legends_match_their_traces(visits: dict[tuple[str, str], dict[str, Any]]) -> None:
    """A name drawn in several panels has one colour, the one its legend entry shows."""
    for (page, screen), state in visits.items():
        for figure in state["figures"]:
            assert figure["legendMismatch"] == [], f"{page}: {figure['title']!r} changes colour for {figure['legendMismatch']}"


def test_compared_maps_share_a_scale_and_colour_bars_say_what_they_show(visits: dict[tuple[str, str], dict[str, Any]]) -> None:
    figures = visits[("book/beyond_residual.html", "desktop")]["figures"]
    by_title = {f["title"]: f["heatmaps"][0] for f in figures if f["heatmaps"]}
    attn = [h for t, h in by_title.items() if "patching attn_out" in t]
    mlp = [h for t, h in by_title.items() if "patching mlp_out" in t]
    assert attn and mlp and attn[0]["zmax"] == mlp[0]["zmax"] and attn[0]["zmin"] == mlp[0]["zmin"], by_title
    noising = [h for t, h in by_title.items() if "noising" in t]
    assert noising and "damage" in noising[0]["colorbar"], by_title
    assert all("logit diff" in h["colorbar"] for t, h in by_title.items() if "noising" not in t), by_title


@pytest.mark.parametrize("screen", SCREENS)
def test_no_text_runs_off_the_screen(visits: dict[tuple[str, str], dict[str, Any]], screen: str) -> None:
    """Long outputs wrap and wide tables scroll inside their box; the page never scrolls sideways."""
    for (page, s), state in visits.items():
        if s != screen:
            continue
        assert state["offScreen"] == [], f"{page} at {state['viewport']} px: " + "\n".join(state["offScreen"])
        assert state["pageWidth"] <= state["viewport"], f"{page} scrolls sideways: {state['pageWidth']} px"


def test_screenshots_are_kept(visits: dict[tuple[str, str], dict[str, Any]]) -> None:
    for page, screen in visits:
        shot = ARTIFACTS / f"{Path(page).stem}-{screen}.png"
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000, shot
