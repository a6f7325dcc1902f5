"""The built book reads offline in a real browser, on a desktop and on a phone.

Builds the book with the jupyter-book command of ``make book`` and the course model (the execution
cache makes an unchanged rebuild take seconds), serves ``_build/html`` on 127.0.0.1 and loads every
page in Debian's headless ``chromium`` (network off except 127.0.0.1) through the Chrome DevTools
protocol, at 1366x900 and as a 390x844 phone. It checks that the plotly figures and the maths render,
that no script request fails or leaves the machine, that the book serves one plotly.js for all its
pages, that no figure's title, legend, tick label or colour bar runs out of its figure or off the
screen, that every heatmap labels every row and column, that legends match their traces, and that no
text or table runs off the screen (wide ones scroll or wrap inside their box). What a reader would see
as broken fails it too: a figure's texts (title, subplot titles, tick labels, legend, colour bar,
point labels) that overlap each other, a legend over a plot, a label cut at its plot's edge, a trace
whose hover is plotly's raw default, a circuitsvis widget whose labels overlap, leave their thumbnail
or are hard to read in dark mode, any console error or warning, and a copy of circuitsvis's bundle on
each page. Pages with a widget are also visited in dark mode (``dark``). Screenshots of every
page at every size are kept in ``artifacts/`` (``PAGE-phone.png``, ``PAGE-desktop.png``,
``PAGE-dark.png``, long pages in parts). Needs ``apt-get install chromium``.
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

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "_build" / "html"
PAGE = "book/residual_patching.html"
# name: (width, height, mobile)
SCREENS = {"desktop": (1366, 900, False), "phone": (390, 844, True)}
DARK = "dark"  # the desktop again, with a dark colour scheme: pages with a circuitsvis widget only
WIDGET = '[id^="circuits-vis-"]'  # the div circuitsvis renders into
CIRCUITSVIS_BUNDLE = b"var CircuitsVis="  # how circuitsvis's JavaScript bundle starts (after "use strict")
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
        for domain in ("Page", "Network", "Runtime", "Log"):
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
  // An SVG text's four corners on the screen, its rotation included (a rotated tick label's bounding
  // box is much larger than the label), and a box's corners.
  const quad = e => {
    const b = e.getBBox(), m = e.getScreenCTM();
    return [[b.x, b.y], [b.x + b.width, b.y], [b.x + b.width, b.y + b.height], [b.x, b.y + b.height]]
      .map(([x, y]) => [m.a * x + m.c * y + m.e, m.b * x + m.d * y + m.f]);
  };
  const corners = r => [[r.l, r.t], [r.r, r.t], [r.r, r.b], [r.l, r.b]];
  // How deep two convex polygons overlap (px; <= 0: apart), by the separating axis theorem.
  const depth = (p, q) => {
    let d = Infinity;
    for (const poly of [p, q]) for (let i = 0; i < poly.length; i++) {
      const [x1, y1] = poly[i], [x2, y2] = poly[(i + 1) % poly.length], len = Math.hypot(x2 - x1, y2 - y1);
      if (!len) continue;
      const project = pts => pts.map(([x, y]) => (x * (y1 - y2) + y * (x2 - x1)) / len);
      const a = project(p), b = project(q);
      d = Math.min(d, Math.min(Math.max(...a), Math.max(...b)) - Math.max(Math.min(...a), Math.min(...b)));
    }
    return d;
  };
  const inside = (pts, r, slack) => pts.every(([x, y]) => x >= r.l - slack && x <= r.r + slack && y >= r.t - slack && y <= r.b + slack);
  const shown = e => { for (let a = e; a && a.nodeType === 1; a = a.parentElement) { const s = getComputedStyle(a); if (s.display === 'none' || s.visibility === 'hidden' || s.opacity === '0') return false; } return true; };
  // the plotly part a text belongs to, to name it in a message
  const part = e => { for (let a = e; a && a.getAttribute; a = a.parentNode) { const c = (a.getAttribute('class') || '').split(' ')[0]; if (/^(gtitle|annotation|xtick|ytick|legend|colorbar|g-xtitle|g-ytitle|textpoint|point|infolayer)$/.test(c) || /^[xy]\d*tick$/.test(c)) return c; } return 'text'; };
  const OVERLAP = 3;  // px two text boxes may share: a box holds a line's full height, its glyphs less
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
    // every text drawn in the figure: no two overlap, none is cut by the figure's edge, and a label
    // drawn on a plot (a point's or a bar's text) stays inside that plot, where plotly clips it
    const texts = Array.from(gd.querySelectorAll('svg text'))
      .filter(e => e.textContent.trim() && !e.closest('.hoverlayer') && shown(e))
      .map(e => ({e, q: quad(e), name: part(e) + ' ' + JSON.stringify(e.textContent.trim().slice(0, 40))}))
      .filter(t => t.q.some(([x, y], i) => i > 0 && (x !== t.q[0][0] || y !== t.q[0][1])));
    const overlaps = [], clipped = [];
    for (let i = 0; i < texts.length; i++) {
      for (let j = i + 1; j < texts.length; j++) {
        const k = depth(texts[i].q, texts[j].q);
        if (k > OVERLAP) overlaps.push(texts[i].name + ' overlaps ' + texts[j].name + ' by ' + k.toFixed(0) + ' px');
      }
      if (!inside(texts[i].q, d, 1)) clipped.push(texts[i].name + ' is cut by the figure\'s edge');
    }
    const plotAreas = Array.from(gd.querySelectorAll('.draglayer .nsewdrag')).map(e => ({e, r: box(e)}));
    for (const t of texts) {
      const layer = t.e.closest('.scatterlayer, .barlayer');
      const subplot = layer && layer.closest('.subplot');
      if (!subplot) continue;
      const id = Array.from(subplot.classList).find(c => /^x\d*y\d*$/.test(c));
      const area = gd.querySelector('.draglayer .' + id + ' .nsewdrag');
      if (area && !inside(t.q, box(area), 1)) clipped.push(t.name + ' is cut by the edge of its plot');
    }
    for (const legend of gd.querySelectorAll('.legend')) {
      const bg = legend.querySelector('.bg') || legend;
      for (const a of plotAreas) {
        const k = depth(corners(box(bg)), corners(a.r));
        if (k > OVERLAP) overlaps.push('the legend lies over a plot by ' + k.toFixed(0) + ' px');
      }
    }
    // a text written on a plot (an annotation, a label of a line) covers no bar and no marker
    const marks = Array.from(gd.querySelectorAll('.barlayer .point path, .scatterlayer .points path')).map(e => corners(box(e)));
    for (const t of texts.filter(t => t.e.closest('.annotation'))) {
      const hit = marks.map(m => depth(t.q, m)).filter(k => k > OVERLAP);
      if (hit.length) overlaps.push(t.name + ' lies on ' + hit.length + ' bars or markers');
    }
    // a trace's hover says what it shows, with rounded numbers, not plotly's raw "trace 0 / x: / y:"
    const rawHover = gd._fullData.filter(t => !t.hovertemplate && t.hoverinfo !== 'skip' && t.hoverinfo !== 'none')
      .map(t => t.type + ' ' + (t.name || ''));
    return {title: title ? title.textContent : '', top: Math.round(d.t + window.scrollY), outside, heatmaps, legendMismatch, overlaps: overlaps.slice(0, 20), clipped: clipped.slice(0, 20), rawHover};
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
  // an output's table (pandas) fits its column: one that scrolls shows its right-hand columns and
  // headers cut at the edge of the screen
  for (const t of article.querySelectorAll('.cell_output table')) {
    const holder = t.closest('.output') || t.parentElement;
    if (holder.scrollWidth > holder.clientWidth + 1) offScreen.push('a table is cut at the edge of its box: ' + describe(t.querySelector('th') || t) + ' ' + holder.scrollWidth + ' > ' + holder.clientWidth);
  }
  // circuitsvis widgets: their labels (the head names on the thumbnails, the headings) overlap no
  // other label, stay inside their own box (a thumbnail), and read against what lies behind them
  const luminance = c => {
    const [r, g, b] = c.match(/[\d.]+/g).slice(0, 3).map(v => { v = v / 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const background = e => {
    for (let a = e; a && a.nodeType === 1; a = a.parentElement) {
      const c = getComputedStyle(a).backgroundColor, alpha = c.match(/[\d.]+/g)[3];
      if (alpha === undefined || Number(alpha) > 0.5) return c;
    }
    return 'rgb(255, 255, 255)';
  };
  const contrast = e => { const [a, b] = [luminance(getComputedStyle(e).color), luminance(background(e))].sort((x, y) => y - x); return (a + 0.05) / (b + 0.05); };
  const widgets = Array.from(document.querySelectorAll('WIDGET')).map(w => {
    const labels = Array.from(w.querySelectorAll('*')).filter(e => shown(e)
      && Array.from(e.childNodes).some(n => n.nodeType === 3 && n.textContent.trim()))
      .map(e => ({e, r: box(e), name: e.tagName + ' ' + JSON.stringify(e.textContent.trim().slice(0, 30))}));
    const problems = [];
    for (let i = 0; i < labels.length; i++) {
      for (let j = i + 1; j < labels.length; j++) {
        const k = depth(corners(labels[i].r), corners(labels[j].r));
        if (k > OVERLAP) problems.push(labels[i].name + ' overlaps ' + labels[j].name + ' by ' + k.toFixed(0) + ' px');
      }
      const own = box(labels[i].e.parentElement), whole = box(w);
      if (!inside(corners(labels[i].r), own, 1) || !inside(corners(labels[i].r), whole, 1)) problems.push(labels[i].name + ' runs out of its box');
      const c = contrast(labels[i].e);
      if (c < 4.5) problems.push(labels[i].name + ' is hard to read: contrast ' + c.toFixed(1) + ' (' + getComputedStyle(labels[i].e).color + ' on ' + background(labels[i].e) + ')');
    }
    const heads = labels.filter(l => l.e.tagName === 'H4');
    return {labels: labels.length, problems: problems.slice(0, 20), thumbnail: heads.length ? Math.min(...heads.map(l => box(l.e.parentElement).w)) : null};
  });
  const scripts = Array.from(document.scripts);
  return {
    figures, widgets, offScreen: offScreen.slice(0, 20), theme: document.documentElement.dataset.theme,
    downloads: Array.from(document.querySelectorAll('a[href*="_sources/"]')).map(a => a.href),
    circuitsvisScripts: scripts.filter(s => /circuitsvis/i.test(s.src)).map(s => new URL(s.src).pathname),
    inlineCircuitsvis: scripts.filter(s => !s.src && s.text.includes('CIRCUITSVIS_BUNDLE')).length,
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


def _visit(browser: DevTools, url: str, width: int) -> dict[str, Any]:
    """Load a page, wait for its figures and maths, and measure it (MEASURE; its events under "events")."""
    first_event = len(browser.events)
    browser.send("Page.navigate", url=url)
    browser.wait_for("Page.loadEventFired", timeout=120, since=first_event)
    deadline = time.monotonic() + 60
    while not browser.evaluate(READY) and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(0.5)  # responsive figures settle to their column's width
    measure = MEASURE.replace("SCREEN_WIDTH", str(width)).replace("WIDGET", WIDGET)
    state = browser.evaluate(measure.replace("CIRCUITSVIS_BUNDLE", CIRCUITSVIS_BUNDLE.decode()))
    state["events"] = browser.events[first_event:]
    return state


@pytest.fixture(scope="module")
def visits(browser: DevTools, server: str, built_book: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Every page at every screen size, and the pages with a widget in dark mode: what MEASURE finds,
    the page's network and console events, screenshots."""
    ARTIFACTS.mkdir(exist_ok=True)
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for screen, (width, height, mobile) in SCREENS.items():
        browser.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=mobile)
        for page in _pages(built_book):
            found[(page, screen)] = _visit(browser, f"{server}/{page}", width)
            _screenshot(browser, f"{Path(page).stem}-{screen}", width)
    width, height, mobile = SCREENS["desktop"]
    browser.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=mobile)
    browser.send("Emulation.setEmulatedMedia", features=[{"name": "prefers-color-scheme", "value": "dark"}])
    try:
        for page in [page for (page, screen), state in found.items() if screen == "desktop" and state["widgets"]]:
            found[(page, DARK)] = _visit(browser, f"{server}/{page}", width)
            _screenshot(browser, f"{Path(page).stem}-{DARK}", width)
    finally:
        browser.send("Emulation.setEmulatedMedia", features=[])
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


def _console_problems(events: list[dict]) -> list[str]:
    """Uncaught exceptions, console errors and warnings, and the browser's own error and warning log
    entries (a failed request, a deprecated API) among a page's events."""
    problems = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            problems.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}"[:300])
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            problems.append(f"console.{params['type']}: {text}"[:300])
        elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
            entry = params["entry"]
            problems.append(f"{entry['source']} {entry['level']}: {entry['text']} {entry.get('url', '')}"[:300])
    return problems


def test_no_console_errors_or_warnings(visits: dict[tuple[str, str], dict[str, Any]]) -> None:
    """A page that throws (a script declared twice) or logs an error or warning is broken somewhere."""
    problems = [f"{page} ({screen}): {p}" for (page, screen), state in visits.items() for p in _console_problems(state["events"])]
    assert problems == [], "\n".join(problems[:20])


@pytest.mark.parametrize("screen", SCREENS)
def test_figure_texts_neither_overlap_nor_are_cut(visits: dict[tuple[str, str], dict[str, Any]], screen: str) -> None:
    """Title, subplot titles, tick labels, legend, colour bar and point labels each keep their own
    place; a legend never lies over a plot; no label is cut at its figure's or its plot's edge."""
    problems = [
        f"{page}: figure {figure['title']!r}: {what}"
        for (page, s), state in visits.items() if s == screen
        for figure in state["figures"] for what in figure["overlaps"] + figure["clipped"]
    ]
    assert problems == [], "\n".join(problems[:30])


def test_every_trace_has_a_formatted_hover(visits: dict[tuple[str, str], dict[str, Any]]) -> None:
    """No trace falls back to plotly's raw hover ("trace 0", "x:", "y:", unrounded values)."""
    raw = [
        f"{page}: figure {figure['title']!r}: {trace}"
        for (page, screen), state in visits.items() if screen == "desktop"
        for figure in state["figures"] for trace in figure["rawHover"]
    ]
    assert raw == [], "\n".join(raw)


def test_widgets_are_readable_on_every_screen_and_in_dark_mode(visits: dict[tuple[str, str], dict[str, Any]]) -> None:
    """circuitsvis's head selector: labels that overlap nothing, stay on their thumbnail and read
    against what lies behind them; thumbnails wide enough to see a pattern on a desktop."""
    widgets = {key: state["widgets"] for key, state in visits.items() if state["widgets"]}
    assert len({page for page, _ in widgets}) >= 3, sorted(widgets)
    assert {screen for _, screen in widgets} == {*SCREENS, DARK}
    for (page, screen), found in widgets.items():
        for widget in found:
            assert widget["labels"] > 0 and widget["problems"] == [], f"{page} ({screen}):\n" + "\n".join(widget["problems"])
            if screen != "phone":
                assert widget["thumbnail"] >= 100, f"{page} ({screen}): head thumbnails {widget['thumbnail']:.0f} px wide"
    assert all(visits[key]["theme"] == "dark" for key in widgets if key[1] == DARK), "dark mode did not apply"


def test_one_circuitsvis_bundle_for_the_whole_book(visits: dict[tuple[str, str], dict[str, Any]], built_book: Path) -> None:
    """circuitsvis's 1.3 MB bundle is served once, from _static, not inlined into every page with a widget."""
    with_widgets = [key for key, state in visits.items() if state["widgets"]]
    assert with_widgets and all(visits[key]["circuitsvisScripts"] == ["/_static/circuitsvis.js"] for key in with_widgets), \
        {key: visits[key]["circuitsvisScripts"] for key in with_widgets}
    assert all(state["inlineCircuitsvis"] == 0 for state in visits.values()), "a page inlines circuitsvis's bundle"
    copies = [p for p in built_book.rglob("*") if p.is_file() and p.suffix in (".html", ".js") and CIRCUITSVIS_BUNDLE in p.read_bytes()]
    assert [p.relative_to(built_book).as_posix() for p in copies] == ["_static/circuitsvis.js"]


def test_download_button_offers_the_notebook(visits: dict[tuple[str, str], dict[str, Any]], server: str) -> None:
    """Each chapter's download menu offers its notebook (book/NAME.ipynb, the one Colab opens)."""
    import urllib.request

    chapters = [page for page, screen in visits if screen == "desktop" and (ROOT / page).with_suffix(".ipynb").exists()]
    assert len(chapters) >= 13, chapters
    for page in chapters:
        notebooks = [url for url in visits[(page, "desktop")]["downloads"] if url.endswith(".ipynb")]
        assert notebooks, f"{page}: the download menu offers {visits[(page, 'desktop')]['downloads']}"
        with urllib.request.urlopen(notebooks[0], timeout=30) as reply:
            served = json.loads(reply.read())
        assert served == json.loads((ROOT / page).with_suffix(".ipynb").read_text(encoding="utf-8")), page
