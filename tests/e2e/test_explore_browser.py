"""Explorable heatmaps in a real browser: a click, a tap and the arrow keys open a cell's patched run,
on a 1366 px desktop and a 390 px phone, and the panel shows what Python computes for that cell.

Pages written here with ``ExplorableFigure.to_html`` (the notebooks' figures, without building the
book), and two of the built book: the residual-stream chapter (its map of ``resid_pre``, cell
(layer, END)) and chapter 10 (its map of ``attn_out`` under GPT-2 small's published one). The values are checked against a direct computation: the corrupted prompts run with a
hand-written hook that patches the clean activation in. Uses test_book_browser's headless Chromium.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import plotly
import pytest
import torch

from patched_runs import hooked_final  # tests/unit/patched_runs.py
from patchlab.plots import explorable_heatmap
from test_book_browser import SCREENS, DevTools, _QuietHandler, browser, built_book, server  # noqa: F401

pytestmark = pytest.mark.slow

TOP_K = 5

# Where cell (r, c) of the page's first explorable figure is on the screen, after scrolling it into view:
# of its heatmap whose cells open their runs, or (other) of the first one that does not.
LOCATE = r"""((r, c, other) => {
  const gd = document.querySelector('.plotly-graph-div[data-explorable]');
  gd.scrollIntoView({block: 'center'});
  const t = gd._fullData.find(t => (t.hovertemplate || '').includes('click for its run') !== other);
  const box = gd.getBoundingClientRect();
  const xa = gd._fullLayout[t.xaxis.replace('x', 'xaxis')], ya = gd._fullLayout[t.yaxis.replace('y', 'yaxis')];
  return {x: box.left + xa._offset + xa.l2p(c), y: box.top + ya._offset + ya.l2p(r),
          panelLeft: gd.parentNode.querySelector('.patchlab-panel').getBoundingClientRect().left,
          panelTop: gd.parentNode.querySelector('.patchlab-panel').getBoundingClientRect().top,
          figureRight: box.right, figureBottom: box.bottom, viewport: window.innerWidth,
          panelRight: gd.parentNode.querySelector('.patchlab-panel').getBoundingClientRect().right,
          panelBottom: gd.parentNode.querySelector('.patchlab-panel').getBoundingClientRect().bottom,
          outerBottom: gd.parentNode.parentNode.getBoundingClientRect().bottom};
})"""

# What the panel shows: its title, its value line and its tables' rows (cell texts).
PANEL = r"""(() => {
  const panel = document.querySelector('.plotly-graph-div[data-explorable]').parentNode.querySelector('.patchlab-panel');
  const rows = sel => Array.from(panel.querySelectorAll(sel + ' tr')).slice(1)
    .map(tr => Array.from(tr.children).map(td => td.textContent));
  const title = panel.querySelector('.title');
  return {title: title ? title.textContent : null, text: panel.textContent,
          lds: rows('table.lds'), tops: rows('table.tops'), pattern: rows('table.pattern'),
          focused: document.activeElement && document.activeElement.getAttribute('data-explorable') === '1'};
})()"""


def _expected(model: Any, data: Any, final: torch.Tensor) -> tuple[list[float], list[tuple[str, float]]]:
    """Per-prompt logit differences and prompt 0's top tokens (repr of the string, probability)."""
    answers = data.answer_tokens
    lds = (final.gather(-1, answers[:, :1]) - final.gather(-1, answers[:, 1:])).squeeze(-1).tolist()
    probs, ids = final[0].softmax(-1).topk(TOP_K)
    strings = model.to_str_tokens(ids, prepend_bos=False)
    return lds, [(f'"{s}"', float(p)) for s, p in zip(strings, probs)]


def _check_panel(panel: dict, lds: list[float], tops: list[tuple[str, float]]) -> None:
    assert [float(row[4]) for row in panel["lds"]] == pytest.approx(lds, abs=0.006), panel["lds"]
    shown = [row[3].rsplit(" ", 1) for row in panel["tops"]]
    assert [s for s, _ in shown] == [s for s, _ in tops], panel["tops"]
    assert [float(p) for _, p in shown] == pytest.approx([p for _, p in tops], abs=0.0006)


def _check_layout(page: "Page", screen: str) -> None:
    """Beside the figure on a desktop, below it on a phone, on the screen, and inside the box that holds
    the figure (plotly's notebook renderer gives that box the figure's height: the panel must not be cut)."""
    at = page.where(0, 0)
    assert at["viewport"] == SCREENS[screen][0], "the page is laid out at the screen's width"
    if screen == "phone":
        assert at["panelTop"] >= at["figureBottom"] - 1, f"on a phone the panel opens below the figure: {at}"
    else:
        assert at["panelLeft"] >= at["figureRight"] - 1, f"on a desktop the panel opens beside the figure: {at}"
    assert at["panelRight"] <= at["viewport"] + 1, f"the panel runs off the screen: {at}"
    assert at["panelBottom"] <= at["outerBottom"] + 1, f"the panel runs out of the figure's box: {at}"


class Page:
    """One page in the browser at one screen size: click, tap, press keys, read the panel."""

    def __init__(self, browser: DevTools, url: str, screen: str) -> None:
        width, height, mobile = SCREENS[screen]
        self.browser, self.mobile = browser, mobile
        browser.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=mobile)
        browser.send("Emulation.setTouchEmulationEnabled", enabled=mobile, maxTouchPoints=5 if mobile else 1)
        first = len(browser.events)
        browser.send("Page.navigate", url=url)
        browser.wait_for("Page.loadEventFired", timeout=120, since=first)
        deadline = time.monotonic() + 60
        while not browser.evaluate("!!document.querySelector('.patchlab-panel')") and time.monotonic() < deadline:
            time.sleep(0.3)
        time.sleep(0.5)  # the figure settles to its column's width

    def where(self, r: int, c: int, other: bool = False) -> dict:
        call = f"{LOCATE}({r}, {c}, {str(other).lower()})"
        found = self.browser.evaluate(call)
        time.sleep(0.3)
        return self.browser.evaluate(call) if found else found

    def click(self, r: int, c: int, other: bool = False) -> dict:
        at = self.where(r, c, other)
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.browser.send("Input.dispatchMouseEvent", type=kind, x=at["x"], y=at["y"], button="left", clickCount=1)
        return self._settled()

    def tap(self, r: int, c: int) -> dict:
        at = self.where(r, c)
        point = [{"x": at["x"], "y": at["y"]}]
        self.browser.send("Input.dispatchTouchEvent", type="touchStart", touchPoints=point)
        self.browser.send("Input.dispatchTouchEvent", type="touchEnd", touchPoints=[])
        return self._settled()

    def key(self, name: str) -> dict:
        code = {"ArrowUp": 38, "ArrowDown": 40, "ArrowLeft": 37, "ArrowRight": 39}[name]
        for kind in ("rawKeyDown", "keyUp"):
            self.browser.send("Input.dispatchKeyEvent", type=kind, key=name, code=name, windowsVirtualKeyCode=code)
        return self._settled()

    def _settled(self) -> dict:
        time.sleep(0.4)
        return self.browser.evaluate(PANEL)


@pytest.fixture(scope="module")
def notebook_pages(model: Any, classic: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Explorable maps of ``resid_pre`` and ``head_out`` as standalone pages, served on 127.0.0.1."""
    from patchlab.patching import patch_ioi

    root = tmp_path_factory.mktemp("explore")
    shutil.copyfile(Path(plotly.__file__).parent / "package_data" / "plotly.min.js", root / "plotly.min.js")
    figures = {}
    for component in ("resid_pre", "head_out"):
        values = patch_ioi(model, classic, component, method="fast", progress=False)
        figures[component] = explorable_heatmap(model, classic, values, component, f"ioi-mini: {component}")
        html = figures[component].to_html(include_plotlyjs="plotly.min.js", full_html=True)
        (root / f"{component}.html").write_text(html, encoding="utf-8")
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield {"url": f"http://127.0.0.1:{httpd.server_address[1]}", "figures": figures}
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("screen", list(SCREENS))
def test_click_tap_and_keys_show_the_cells_run(browser: DevTools, notebook_pages: dict, model: Any, classic: Any,
                                               screen: str) -> None:
    page = Page(browser, f"{notebook_pages['url']}/resid_pre.html", screen)
    end, last = classic.end_pos, model.cfg.n_layers - 1
    panel = page.tap(last, end) if page.mobile else page.click(last, end)
    assert panel["title"] == f"layer {last}, position {classic.end_pos}: {classic.str_tokens[end]!r} (END)", panel
    final = hooked_final(model, classic, f"blocks.{last}.hook_resid_pre", (slice(None), end))
    _check_panel(panel, *_expected(model, classic, final))
    assert panel["focused"], "a click or tap gives the map the keyboard focus"
    panel = page.key("ArrowUp")  # layer last - 1, END
    final = hooked_final(model, classic, f"blocks.{last - 1}.hook_resid_pre", (slice(None), end))
    _check_panel(panel, *_expected(model, classic, final))
    _check_layout(page, screen)


@pytest.mark.parametrize("screen", list(SCREENS))
def test_head_cells_show_the_heads_pattern(browser: DevTools, notebook_pages: dict, model: Any, classic: Any,
                                           screen: str) -> None:
    page = Page(browser, f"{notebook_pages['url']}/head_out.html", screen)
    layer, head = model.cfg.n_layers - 1, 1
    panel = page.tap(layer, head) if page.mobile else page.click(layer, head)
    final = hooked_final(model, classic, f"blocks.{layer}.attn.hook_z", (slice(None), slice(None), head))
    _check_panel(panel, *_expected(model, classic, final))
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(classic.clean_tokens)
        _, corrupted_cache = model.run_with_cache(classic.corrupted_tokens)
    name = f"blocks.{layer}.attn.hook_pattern"
    assert [float(row[1]) for row in panel["pattern"]] == pytest.approx(clean_cache[name][0, head, -1].tolist(), abs=0.006)
    assert [float(row[2]) for row in panel["pattern"]] == pytest.approx(corrupted_cache[name][0, head, -1].tolist(), abs=0.006)


@pytest.mark.parametrize("screen", list(SCREENS))
def test_the_books_residual_map_opens_layer_end(browser: DevTools, server: str, model: Any, classic: Any,
                                                screen: str) -> None:
    """The built book's residual-stream chapter: its explorable map's cell (layer, END) shows that run."""
    page = Page(browser, f"{server}/book/residual_patching.html", screen)
    end, layer = classic.end_pos, 1
    panel = page.tap(layer, end) if page.mobile else page.click(layer, end)
    final = hooked_final(model, classic, f"blocks.{layer}.hook_resid_pre", (slice(None), end))
    _check_panel(panel, *_expected(model, classic, final))
    _check_layout(page, screen)


@pytest.mark.parametrize("screen", list(SCREENS))
def test_the_books_attention_output_map_opens_its_cells_under_the_published_map(
    browser: DevTools, server: str, model: Any, classic: Any, screen: str
) -> None:
    """Chapter 10's attn_out figure, GPT-2 small's published map above this model's: a cell of the
    lower map shows its run; a click on the published map says its cells carry none."""
    page = Page(browser, f"{server}/book/beyond_residual.html", screen)
    end, layer = classic.end_pos, model.cfg.n_layers - 1
    panel = page.tap(layer, end) if page.mobile else page.click(layer, end)
    assert panel["title"] == f"layer {layer}, position {classic.end_pos}: {classic.str_tokens[end]!r} (END)", panel
    final = hooked_final(model, classic, f"blocks.{layer}.hook_attn_out", (slice(None), end))
    _check_panel(panel, *_expected(model, classic, final))
    _check_layout(page, screen)
    if not page.mobile:
        assert "carry no runs" in page.click(layer, end, other=True)["text"]


def test_the_books_explorable_figures_stay_within_their_budget(built_book: Path) -> None:
    """Each explorable figure of the built book (its plotly call with its panel's data) is within
    BUDGET_BYTES, and chapters 6, 8, 9 and 10 have theirs."""
    import re

    from patchlab.explore import BUDGET_BYTES

    found = {}
    for page in sorted((built_book / "book").glob("*.html")):
        scripts = re.findall(r"<script[^>]*>(.*?)</script>", page.read_text(encoding="utf-8"), re.DOTALL)
        sizes = [len(s.encode()) for s in scripts if "data-explorable" in s and "Plotly.newPlot" in s]
        if sizes:
            found[page.stem] = sizes
    assert {"residual_patching", "attention_heads", "path_patching", "beyond_residual"} <= set(found), found
    assert len(found["beyond_residual"]) == 2, "chapter 10's attention and MLP output maps"
    assert all(size <= BUDGET_BYTES for sizes in found.values() for size in sizes), found
