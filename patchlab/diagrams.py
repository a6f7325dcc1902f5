"""Diagrams drawn by code: the residual stream with its hook points, and the IOI circuit.

Each function returns a :class:`Diagram`, an SVG picture that notebooks show inline (it has an HTML
form that scales to the width of the page) and that :meth:`Diagram.save` writes to a file. The SVG
is written here, by hand, so it renders offline and needs no drawing library.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from pathlib import Path

FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
MONO = "DejaVu Sans Mono, Menlo, Consolas, monospace"
STREAM = "#9ecae1"  # the residual stream
READ, WRITE = "#4d4d4d", "#b2182b"  # arrows that read from / write to the stream
BOX = {"attn": "#fde0c5", "mlp": "#d9f0d3", "io": "#eeeeee", "head": "#fff7ec"}


@dataclass(frozen=True)
class Diagram:
    """An SVG picture with a short text description (its ``<title>``, read by screen readers)."""

    svg: str
    description: str

    def _repr_html_(self) -> str:
        return f'<div style="max-width: {self.width}px; margin: 0 auto;">{self.svg}</div>'

    def _repr_svg_(self) -> str:
        return self.svg

    @property
    def width(self) -> int:
        return int(self.svg.split('viewBox="0 0 ', 1)[1].split()[0])

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.svg, encoding="utf-8")
        return path


class _Canvas:
    """A few SVG primitives on a fixed-size canvas (scaled to the page width when shown)."""

    def __init__(self, width: int, height: int, description: str) -> None:
        self.width, self.height, self.description = width, height, description
        self.parts: list[str] = []

    def rect(
        self, x: float, y: float, w: float, h: float, fill: str, stroke: str = "#555", dash: bool = False, rx: float = 6
    ) -> None:
        extra = ' stroke-dasharray="5 4"' if dash else ""
        self.parts.append(
            f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="{rx}" fill="{fill}" stroke="{stroke}"{extra}/>'
        )

    def text(
        self,
        x: float,
        y: float,
        text: str,
        size: float = 13,
        anchor: str = "middle",
        bold: bool = False,
        mono: bool = False,
        fill: str = "#222",
    ) -> None:
        weight = ' font-weight="bold"' if bold else ""
        self.parts.append(
            f'<text x="{x}" y="{y}" font-size="{size}" text-anchor="{anchor}" '
            f'font-family="{MONO if mono else FONT}" fill="{fill}"{weight}>{escape(text)}</text>'
        )

    def line(
        self,
        x1: float,
        y1: float,
        x2: float,
        y2: float,
        color: str = READ,
        width: float = 1.6,
        arrow: bool = True,
        dash: bool = False,
    ) -> None:
        head = f' marker-end="url(#arrow-{color.lstrip("#")})"' if arrow else ""
        extra = ' stroke-dasharray="4 4"' if dash else ""
        self.parts.append(
            f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="{color}" stroke-width="{width}"{head}{extra}/>'
        )

    def plus(self, x: float, y: float) -> None:
        self.parts.append(f'<circle cx="{x}" cy="{y}" r="8" fill="white" stroke="{WRITE}" stroke-width="1.6"/>')
        self.text(x, y + 4.5, "+", size=14, bold=True, fill=WRITE)

    def render(self) -> Diagram:
        colors = {READ, WRITE, "#2166ac", "#777777"}
        markers = "".join(
            f'<marker id="arrow-{c.lstrip("#")}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
            f'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="{c}"/></marker>'
            for c in sorted(colors)
        )
        svg = (
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {self.width} {self.height}" '
            f'width="100%" role="img" style="max-width: {self.width}px; height: auto;">'
            f"<title>{escape(self.description)}</title><defs>{markers}</defs>"
            f'<rect x="0" y="0" width="{self.width}" height="{self.height}" fill="white"/>'
            + "".join(self.parts)
            + "</svg>"
        )
        return Diagram(svg, self.description)


def residual_stream(n_layers: int = 12, n_heads: int = 12, d_model: int = 768) -> Diagram:
    """One transformer block on the residual stream, every hook point named as TransformerLens names it.

    The stream runs down the left: the embeddings start it, each block's attention heads and MLP
    read from it (grey arrows) and add their outputs to it (red arrows), and the unembedding reads
    the logits from its end. ``n_layers``, ``n_heads`` and ``d_model`` label the drawing for one model.
    """
    if min(n_layers, n_heads, d_model) < 1:
        raise ValueError("n_layers, n_heads and d_model must be positive: pass the model's cfg values")
    c = _Canvas(
        420,
        640,
        f"The residual stream of a {n_layers}-layer transformer with {n_heads} heads per "
        "layer: embeddings, one block (attention heads and MLP reading from and writing to "
        "the stream), unembedding, with TransformerLens hook names.",
    )
    x = 34  # the stream
    c.rect(8, 8, 404, 50, BOX["io"])
    c.text(210, 28, "tokens → embed (W_E) + pos_embed (W_pos)", size=13)
    c.text(210, 47, "hook_embed + hook_pos_embed", size=12, mono=True)
    c.parts.append(f'<rect x="{x - 7}" y="58" width="14" height="512" fill="{STREAM}"/>')
    # the block, repeated n_layers times
    c.rect(20, 72, 394, 432, "none", stroke="#777", dash=True)
    c.text(404, 90, f"block L  (L = 0 … {n_layers - 1})", size=13, anchor="end", bold=True)
    c.text(x + 16, 112, "blocks.L.hook_resid_pre", size=12, anchor="start", mono=True)
    # attention: heads side by side
    top, bottom = 124, 296
    c.rect(70, top, 336, bottom - top, BOX["attn"])
    c.text(238, top + 18, f"attention: {n_heads} heads, after ln1", size=13, bold=True)
    c.line(x + 7, top + 10, 70, top + 10)
    shown = list(range(n_heads)) if n_heads <= 4 else [0, 1, None, n_heads - 1]
    for i, head in enumerate(shown):
        hx = 84 + i * 80
        if head is None:
            c.text(hx + 34, top + 62, "…", size=18)
            continue
        c.rect(hx, top + 30, 68, 58, BOX["head"], rx=4)
        c.text(hx + 34, top + 52, f"head {head}", size=12, bold=True)
        c.text(hx + 34, top + 70, "pattern", size=11, mono=True)
        c.text(hx + 34, top + 83, "z", size=11, mono=True)
    c.text(80, top + 108, "blocks.L.attn.hook_pattern", size=12, anchor="start", mono=True)
    c.text(80, top + 123, "  [head, query pos, key pos]: where it looks", size=11, anchor="start")
    c.text(80, top + 141, "blocks.L.attn.hook_z", size=12, anchor="start", mono=True)
    c.text(80, top + 156, "  [pos, head, d_head]: what it copies", size=11, anchor="start")
    c.line(70, bottom - 8, x + 9, bottom - 8, color=WRITE)
    c.text(x + 16, bottom + 8, "blocks.L.hook_attn_out = Σ heads z·W_O", size=11.5, anchor="start", mono=True)
    c.plus(x, bottom - 8)
    c.text(x + 16, bottom + 32, "blocks.L.hook_resid_mid", size=12, anchor="start", mono=True)
    # MLP
    top2, bottom2 = 348, 430
    c.rect(70, top2, 336, bottom2 - top2, BOX["mlp"])
    c.text(238, top2 + 24, "MLP, after ln2 (one position at a time)", size=13, bold=True)
    c.text(80, top2 + 48, "blocks.L.mlp.hook_post", size=12, anchor="start", mono=True)
    c.text(80, top2 + 63, "  [pos, d_mlp]: its neurons", size=11, anchor="start")
    c.line(x + 7, top2 + 10, 70, top2 + 10)
    c.line(70, bottom2 - 10, x + 9, bottom2 - 10, color=WRITE)
    c.plus(x, bottom2 - 10)
    c.text(x + 16, bottom2 + 8, "blocks.L.hook_mlp_out", size=12, anchor="start", mono=True)
    c.text(x + 16, bottom2 + 36, "blocks.L.hook_resid_post", size=12, anchor="start", mono=True)
    c.text(x + 16, bottom2 + 52, "= blocks.L+1.hook_resid_pre", size=12, anchor="start", mono=True)
    # unembedding
    c.rect(8, 570, 404, 56, BOX["io"])
    c.text(210, 592, "ln_final → unembed (W_U) → logits", size=13)
    c.text(210, 612, f"[batch, pos, d_vocab]; the stream is [batch, pos, {d_model}]", size=11.5)
    c.line(x, 520, x, 568, color="#777777")
    c.text(x + 16, 545, f"after block {n_layers - 1}", size=12, anchor="start")
    return c.render()


# Wang et al. (2022), arXiv 2211.00593: the 26 heads of GPT-2 small's IOI circuit, as layer.head.
IOI_HEAD_CLASSES: dict[str, tuple[str, ...]] = {
    "previous token": ("2.2", "4.11"),
    "duplicate token": ("0.1", "0.10", "3.0"),
    "induction": ("5.5", "5.8", "5.9", "6.9"),
    "S-inhibition": ("7.3", "7.9", "8.6", "8.10"),
    "name mover": ("9.6", "9.9", "10.0"),
    "negative name mover": ("10.7", "11.10"),
    "backup name mover": ("9.0", "9.7", "10.1", "10.2", "10.6", "10.10", "11.2", "11.9"),
}


def ioi_circuit() -> Diagram:
    """The IOI circuit of GPT-2 small (Wang et al.): head classes, where they read and write, S1/S2 → END.

    Columns are positions of "When John and Mary went to the shops, John gave the bag to"; layers
    grow downwards. An arrow ends at the position where a head class writes (its query) and starts at
    the position it attends to (its key).
    """
    c = _Canvas(
        420,
        600,
        "The IOI circuit of GPT-2 small after Wang et al. (2022): previous-token, "
        "duplicate-token and induction heads mark S2 as a repeated name; S-inhibition heads "
        "move that to END; name movers at END copy the other name, IO, to the logits.",
    )
    columns = {"S1": 30, "S1+1": 108, "IO": 170, "S2": 252, "END": 366}
    words = {"S1": "John", "S1+1": "and", "IO": "Mary", "S2": "John", "END": "to"}
    for role, cx in columns.items():
        c.text(cx, 22, role, size=13, bold=True)
        c.text(cx, 40, f"“{words[role]}”", size=12)
        c.line(cx, 48, cx, 520, color=STREAM, width=5, arrow=False)
    c.text(6, 72, "layer 0", size=11, anchor="start", fill="#555")

    def group(role: str, y: float, name: str, width: float = 100) -> tuple[float, float]:
        heads = IOI_HEAD_CLASSES[name]
        lines = [" ".join(heads[i : i + 4]) for i in range(0, len(heads), 4)]
        height = 22 + 15 * len(lines)
        cx = columns[role]
        left = min(max(cx - width / 2, 4), 416 - width)
        c.rect(left, y, width, height, BOX["head"])
        c.text(left + width / 2, y + 16, name, size=12, bold=True)
        for i, text in enumerate(lines):
            c.text(left + width / 2, y + 32 + 15 * i, text, size=11.5, mono=True)
        return left, y + height / 2

    def attends(source: str, box: tuple[float, float], label: str = "") -> None:
        """An arrow from the attended position (key) to the box of the heads that read it (query)."""
        x1, (x2, y) = columns[source], box
        c.line(x1, y, x2 - 1, y, color="#2166ac", width=2)
        if label:
            c.text(x2 - 4, y - 6, label, size=11, anchor="end", fill="#2166ac")

    attends("S1", group("S1+1", 64, "previous token", width=100))
    attends("S1", group("S2", 130, "duplicate token", width=112), "S2 looks at S1")
    attends("S1+1", group("S2", 200, "induction", width=112), "S2 looks at S1+1")
    attends("S2", group("END", 270, "S-inhibition", width=124), "END looks at S2")
    attends("IO", group("END", 340, "name mover", width=124), "END looks at IO")
    c.rect(212, 420, 204, 84, BOX["attn"])
    c.text(314, 436, "negative name mover", size=12, bold=True)
    c.text(314, 451, " ".join(IOI_HEAD_CLASSES["negative name mover"]), size=11.5, mono=True)
    c.text(314, 469, "backup name mover", size=12, bold=True)
    backup = IOI_HEAD_CLASSES["backup name mover"]
    c.text(314, 483, " ".join(backup[:4]), size=11.5, mono=True)
    c.text(314, 497, " ".join(backup[4:]), size=11.5, mono=True)
    c.text(6, 512, "layer 11", size=11, anchor="start", fill="#555")
    c.line(columns["END"], 520, columns["END"], 548, color=WRITE, width=2)
    c.rect(250, 550, 166, 28, BOX["io"])
    c.text(333, 569, "logits: “ Mary” > “ John”", size=12)
    c.text(6, 560, "heads: layer.head;", size=11, anchor="start", fill="#555")
    c.text(6, 575, "arrow: key → query", size=11, anchor="start", fill="#555")
    c.text(6, 592, "after Wang et al. (2022)", size=11, anchor="start", fill="#555")
    return c.render()
