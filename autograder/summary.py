"""The class at a glance: ``OUT_DIR/summary.html``, one page per grading run.

The score histogram, the mean score of each question, the most frequent named diagnoses (the known
mistakes of :data:`patchlab.check.MESSAGES` found in the test cells' verdicts of the graded
notebooks) with who got them, the learners whose run timed out or crashed, and the grading time
(``run.json``). Drawn with plotly in the course's template, plotly.js inlined once (the page reads
offline, and wherever it is copied). Everything taken from a notebook or a learner id is escaped.
Written by every grading run and by ``python -m autograder summary OUT_DIR``.
"""

from __future__ import annotations

import html
import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

import patchlab.plots  # noqa: F401  (the course's plotly template, made the default)
from autograder import results as results_module
from autograder.results import STOPPED, Results

PAGE = "summary.html"
TOP_DIAGNOSES = 12
SCORED = ("graded", "needs_manual_grade")
UNNAMED = "another mistake (told in words)"
CSS = """
body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; }
main { max-width: 62rem; margin: 0 auto; padding: 1rem; }
h1 { font-size: 1.5rem; margin: 0.5rem 0; overflow-wrap: anywhere; }
h2 { font-size: 1.2rem; margin: 1.5rem 0 0.5rem; }
.figure { width: 100%; height: 340px; }
.table { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; min-width: 100%; }
th, td { text-align: left; vertical-align: top; padding: 0.3rem 0.5rem; border-bottom: 1px solid #ddd; }
td { overflow-wrap: anywhere; }
td.n, th.n { text-align: right; white-space: nowrap; }
.muted { color: #555; }
/* as in the book: the mode bar (zoom, pan, download) crowds a title on a narrow screen */
@media (max-width: 700px) { .plotly-graph-div .modebar-container { display: none; } }
@media (max-width: 500px) { body { font-size: 14px; } th, td { padding: 0.25rem 0.3rem; } }
"""


@dataclass
class Diagnosis:
    name: str  # a key of patchlab.check.MESSAGES, or UNNAMED
    title: str  # the message's own first words, e.g. "Sign flipped"
    question: str
    learners: list[str] = field(default_factory=list)


def diagnoses(root: Path, res: Results) -> list[Diagnosis]:
    """The diagnoses in the graded notebooks' test cells, most frequent first: each known mistake per
    question, and per question the other failures (described in words, not named)."""
    from patchlab.check import MESSAGES

    found: dict[tuple[str, str], Diagnosis] = {}
    for student in res.learners:
        nb = results_module.read_notebook(results_module.autograded(root, res.assignment, student))
        for cell in nb.cells if nb is not None else []:
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if cell.get("cell_type") != "code" or not isinstance(meta, dict) or not meta.get("grade"):
                continue
            question = str(meta.get("grade_id", ""))
            for output in cell.get("outputs", []):
                if not isinstance(output, dict) or output.get("ename") != "AssertionError":
                    continue
                message = str(output.get("evalue", ""))
                named = [name for name, text in MESSAGES.items() if text in message] or [UNNAMED]
                for name in named:
                    title = MESSAGES[name].split(":", 1)[0] if name in MESSAGES else name
                    entry = found.setdefault((name, question), Diagnosis(name, title, question))
                    if student not in entry.learners:
                        entry.learners.append(student)
    return sorted(found.values(), key=lambda d: (d.name == UNNAMED, -len(d.learners), d.question, d.name))


def bins(scores: list[float], maximum: float) -> tuple[float, list[float], list[int]]:
    """Histogram bins centred on multiples of a step (half points up to 10 points): the step, the
    centres from 0 to the maximum, and how many scores are nearest each."""
    step = 0.5 if maximum <= 10 else 1.0 if maximum <= 40 else float(math.ceil(maximum / 20))
    centres = [k * step for k in range(int(math.ceil(maximum / step)) + 1)]
    counts = [0] * len(centres)
    for score in scores:
        counts[min(len(centres) - 1, max(0, int(math.floor(score / step + 0.5))))] += 1
    return step, centres, counts


def _figure(fig: go.Figure, name: str) -> str:
    return fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=name,
        config={"responsive": True, "displaylogo": False},
        default_width="100%",
        default_height="340px",
    )


def histogram(res: Results) -> str:
    scored = [x.score for x in res.learners.values() if x.status in SCORED and x.score is not None]
    if not scored:
        return "<p>No learner has a score yet.</p>"
    maximum = res.max_score or max(scored)
    step, centres, counts = bins(scored, maximum)
    fig = go.Figure(
        go.Bar(x=centres, y=counts, width=step * 0.9, hovertemplate="%{y} learner(s) at %{x:g} points<extra></extra>")
    )
    fig.update_layout(
        title=f"Scores of {len(scored)} learners (out of {maximum:g})",
        bargap=0.05,
        xaxis={"title": {"text": "score"}, "range": [-step, maximum + step]},
        yaxis={"title": {"text": "learners"}, "dtick": max(1, math.ceil(max(counts) / 6))},
    )
    mean, median = statistics.mean(scored), statistics.median(scored)
    waiting = sum(x.status == "needs_manual_grade" for x in res.learners.values())
    note = f" ({waiting} still to grade by hand: their totals lack those points)" if waiting else ""
    return _figure(fig, "histogram") + f"<p>Mean {mean:.2f}, median {median:g} of {maximum:g}{note}.</p>"


def question_means(res: Results) -> list[tuple[str, float, float | None, int]]:
    """(question, points, mean score or None, learners scored) over the learners whose run ended."""
    rows = []
    for q in res.questions:
        scores = [
            score for x in res.learners.values() if x.status in SCORED and (score := x.scores.get(q.name)) is not None
        ]
        rows.append((q.name, q.max_score, statistics.mean(scores) if scores else None, len(scores)))
    return rows


def per_question(res: Results) -> str:
    rows = question_means(res)
    if not rows:
        return "<p>No questions in the gradebook.</p>"
    shown = [(name, points, mean, n) for name, points, mean, n in rows if mean is not None and points > 0]
    figure = ""
    if shown:
        fig = go.Figure(
            go.Bar(
                y=[html.escape(r[0]) for r in shown][::-1],
                x=[r[2] / r[1] for r in shown][::-1],
                orientation="h",
                customdata=[[r[2], r[1]] for r in shown][::-1],
                hovertemplate="%{y}: %{customdata[0]:.2f} of %{customdata[1]:g} points<extra></extra>",
            )
        )
        fig.update_layout(
            title="Mean score per question (share of its points)", xaxis={"range": [0, 1], "tickformat": ".0%"}
        )
        figure = _figure(fig, "questions")
    body = "".join(
        f"<tr><td>{html.escape(name)}</td><td class='n'>{'-' if mean is None else f'{mean:.2f}'}</td>"
        f"<td class='n'>{points:g}</td><td class='n'>{n}</td></tr>"
        for name, points, mean, n in rows
    )
    return (
        figure + "<div class='table'><table><thead><tr><th>question</th><th class='n'>mean</th>"
        f"<th class='n'>points</th><th class='n'>scored</th></tr></thead><tbody>{body}</tbody></table></div>"
    )


def diagnosis_table(found: list[Diagnosis]) -> str:
    if not found:
        return "<p>No test failed.</p>"
    key = lambda d: "" if d.name == UNNAMED else f" <span class=muted>({html.escape(d.name)})</span>"  # noqa: E731
    rows = "".join(
        f"<tr><td>{html.escape(d.title)}{key(d)}</td><td>{html.escape(d.question)}</td>"
        f"<td class='n'>{len(d.learners)}</td><td>{html.escape(', '.join(sorted(d.learners)))}</td></tr>"
        for d in found[:TOP_DIAGNOSES]
    )
    more = f"<p class='muted'>and {len(found) - TOP_DIAGNOSES} more.</p>" if len(found) > TOP_DIAGNOSES else ""
    return (
        "<div class='table'><table><thead><tr><th>diagnosis</th><th>question</th><th class='n'>learners</th>"
        f"<th>who</th></tr></thead><tbody>{rows}</tbody></table></div>{more}"
    )


def stopped_table(res: Results) -> str:
    stopped = [x for x in res.learners.values() if x.status in STOPPED]
    if not stopped:
        return "<p>None: every notebook ran to its end.</p>"
    rows = "".join(
        f"<tr><td>{html.escape(x.student)}</td><td>{html.escape(x.status)}</td><td>{html.escape(x.detail)}</td></tr>"
        for x in stopped
    )
    return (
        f"<div class='table'><table><thead><tr><th>learner</th><th>status</th><th>why</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
    )


def run_line(res: Results) -> str:
    run = res.run
    if not run:
        return "<p class='muted'>No run record (run.json) in this folder.</p>"
    seconds, count = run.get("seconds"), run.get("submissions")
    each = (
        f", {seconds / count:.1f} s per submission"
        if isinstance(seconds, (int, float)) and isinstance(count, int) and count
        else ""
    )
    how = "executed" if run.get("executed", True) else "rescored without running (--no-run)"
    parts = [
        f"{count} submissions {how} in {seconds} s{each}",
        f"--jobs {run.get('jobs')}",
        f"sandbox {run.get('sandbox')}",
        f"model {run.get('model')}",
        f"finished {run.get('finished')}",
    ]
    return f"<p class='muted'>Grading time: {html.escape('; '.join(parts))}.</p>"


def page(root: Path, res: Results) -> str:
    """The summary page of ``res`` (read from the output folder ``root``)."""
    counts = Counter(x.status for x in res.learners.values())
    statuses = ", ".join(f"{n} {html.escape(s)}" for s, n in sorted(counts.items())) or "no learners"
    title = html.escape(f"{res.assignment}: the class at a glance")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><link rel="icon" href="data:,"><style>{CSS}</style>
<script>{get_plotlyjs()}</script></head>
<body><main>
<h1>{title}</h1>
<p>{len(res.learners)} learners: {statuses}.</p>
{run_line(res)}
<h2>Scores</h2>
{histogram(res)}
<h2>Per question</h2>
{per_question(res)}
<h2>Most frequent diagnoses</h2>
{diagnosis_table(diagnoses(root, res))}
<h2>Timed out and crashed</h2>
{stopped_table(res)}
</main></body></html>
"""


def of(root: Path, assignment: str, grades_csv: str | None = None, run: dict | None = None) -> str:
    """The page for the results in ``root`` (an output folder, or a run's staging copy with the
    ``grades.csv`` text and the run record it is about to commit)."""
    return page(root, results_module.read(root, assignment, grades_csv, run))
