"""Feedback without hidden-test source, made readable (``autograder/feedback.py``): the hidden lines of a
notebook, outputs scrubbed of them, the leak check of a page, and nbgrader's own feedback page (the one
its documentation ships) titled by exercise with answers awaiting a hand."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from nbformat import NotebookNode
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from autograder import feedback

HIDDEN = "assert abs(mean_logit_diff(logits) - 3.1416) < 1e-3  # the true value"
TEST_SOURCE = f"check_mean(mean_logit_diff, model)\n### BEGIN HIDDEN TESTS\n{HIDDEN}\n)\n### END HIDDEN TESTS\n"


def nbgrader_cell(cell: NotebookNode, grade_id: str, **flags: object) -> NotebookNode:
    cell.metadata["nbgrader"] = {"grade_id": grade_id, "grade": False, "solution": False, **flags}
    return cell


def graded_notebook() -> NotebookNode:
    """A test cell whose hidden test failed, and an answer cell that printed a hidden line."""
    test = nbgrader_cell(new_code_cell(TEST_SOURCE), "test_mean", grade=True, points=2)
    test.outputs = [new_output("error", ename="AssertionError", evalue=f"failed: {HIDDEN}",
                               traceback=["\x1b[0;31m----\x1b[0m", f"\x1b[0;32m----> 3\x1b[0m {HIDDEN}", "AssertionError"])]
    answer = nbgrader_cell(new_code_cell("print(source_of_the_test)"), "answer_mean", solution=True)
    answer.outputs = [new_output("stream", name="stdout", text=f"line one\n    {HIDDEN}\nline three\n"),
                      new_output("execute_result", data={"text/plain": f"'{HIDDEN}'", "image/png": "iVBOR"},
                                 execution_count=1)]
    answer_error = nbgrader_cell(new_code_cell("1 / 0"), "answer_div", solution=True)
    answer_error.outputs = [new_output("error", ename="ZeroDivisionError", evalue="division by zero",
                                       traceback=["Traceback", "----> 1 1 / 0", "ZeroDivisionError: division by zero"])]
    return new_notebook(cells=[answer, test, answer_error])


def test_hidden_lines_are_those_between_the_markers_and_long_enough() -> None:
    nb = graded_notebook()
    nb.cells.append(new_code_cell("### BEGIN HIDDEN TESTS\nshort = 1\nassert another_hidden_check()\n"
                                  "### END HIDDEN TESTS\nassert visible_check_after_the_end()"))
    assert feedback.hidden_test_lines(nb) == [HIDDEN, "assert another_hidden_check()"]  # ")" and "short = 1": too short
    assert feedback.hidden_test_lines(new_notebook(cells=[new_code_cell(HIDDEN)])) == []


def test_outputs_lose_every_hidden_line_and_test_cells_their_traceback() -> None:
    nb, _ = feedback.ScrubOutputs().preprocess(graded_notebook(), {})
    answer, test, answer_error = nb.cells
    # the traceback cut to the diagnosis, and that line removed too, as it quotes the hidden test
    assert test.outputs[0].traceback == [feedback.REMOVED] and test.outputs[0].evalue == feedback.REMOVED
    clean = graded_notebook()
    clean.cells[1].outputs[0].evalue = "mean_logit_diff gives -3.14: the sign is flipped"
    scrubbed, _ = feedback.ScrubOutputs().preprocess(clean, {})
    assert scrubbed.cells[1].outputs[0].traceback == ["AssertionError: mean_logit_diff gives -3.14: the sign is flipped"]
    assert answer.outputs[0].text == f"line one\n{feedback.REMOVED}\nline three\n"
    assert answer.outputs[1].data == {"text/plain": feedback.REMOVED, "image/png": "iVBOR"}
    assert answer_error.outputs[0].traceback == ["Traceback", "----> 1 1 / 0", "ZeroDivisionError: division by zero"]
    assert HIDDEN not in str(nb.cells[0].outputs) + str(nb.cells[1].outputs)


def test_a_leak_is_found_through_tags_and_entities() -> None:
    page = "<pre><span>assert abs(mean_logit_diff(logits) - 3.1416) &lt; 1e-3</span>  # the true value</pre>"
    assert feedback.leaks(page, [HIDDEN]) == [HIDDEN]
    assert feedback.leaks(page.replace("3.1416", "2.7183"), [HIDDEN]) == []


def test_each_cell_gets_the_title_of_its_exercise() -> None:
    nb = new_notebook(cells=[
        new_markdown_cell("# The course\n## Not an exercise heading"),  # no nbgrader metadata: no exercise
        nbgrader_cell(new_markdown_cell("# Part 1\n## 1.1 Mean logit difference\nWrite it."), "intro_1"),
        new_code_cell("x = 1"),
        nbgrader_cell(new_markdown_cell("Some words, no heading."), "words"),
        nbgrader_cell(new_markdown_cell("### 1.2 What it says"), "intro_2"),
    ])
    assert feedback.exercise_titles(nb) == ["", "1.1 Mean logit difference", "1.1 Mean logit difference",
                                            "1.1 Mean logit difference", "1.2 What it says"]


@pytest.fixture(scope="module")
def nbgrader_page() -> str:
    """nbgrader's example feedback page (user guide, learner "hacker", ps1/problem1)."""
    package = Path(importlib.util.find_spec("nbgrader").origin).parent
    return (package / "docs/source/user_guide/feedback/hacker/ps1/problem1.html").read_text(encoding="utf-8")


def test_nbgrader_page_titled_by_exercise_with_answers_awaiting_a_hand(nbgrader_page: str) -> None:
    assert '<li><a href="#correct_squares">Test cell</a> (Score: 1.0 / 1.0)</li>' in nbgrader_page
    titles = {"correct_squares": "1.1 Squares <fast>", "sum_of_squares_equation": "1.3 The equation"}
    page = feedback.polish(nbgrader_page, titles, {"sum_of_squares_equation": 1.0})
    assert '<li><a href="#correct_squares">1.1 Squares &lt;fast&gt;</a> (Score: 1.0 / 1.0)</li>' in page
    assert '<span class="nbgrader-label">1.1 Squares &lt;fast&gt;</span>' in page
    assert '<li><a href="#squares_invalid_input">Test cell</a> (Score: 1.0 / 1.0)</li>' in page  # no title given
    assert ('<li><a href="#sum_of_squares_equation">1.3 The equation</a> (awaiting your instructor: 1 points)</li>'
            in page)
    panel = page[page.index('<a name="sum_of_squares_equation"></a>'):][:400]
    assert '<span class="nbgrader-label">1.3 The equation</span>' in panel
    assert "Awaiting your instructor: 1 points" in panel and "Score: 0.0 / 1.0" not in panel
    assert re.search(r"<h4>problem1 \(Score: 3.0 / 10.0; 1 points awaiting your instructor\)</h4>", page)
    assert page.count(feedback.WRAP_CSS) == 1 and page.index(feedback.WRAP_CSS) < page.index("</head>")


def test_a_page_with_nothing_awaiting_keeps_its_scores(nbgrader_page: str) -> None:
    page = feedback.polish(nbgrader_page, {}, {})
    assert page == nbgrader_page.replace("</head>", feedback.WRAP_CSS + "\n</head>", 1)
