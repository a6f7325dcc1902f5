"""Rebuilding a submission on the assignment's own cells (``autograder/restore.py``), on small
nbgrader notebooks written here: what is graded is the release's cells, the instructor's tests and the
learner's answers, whatever the learner's notebook claims."""

from __future__ import annotations

import nbformat
import pytest
from nbformat import NotebookNode
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from autograder import restore

RELEASED_TEST = "check_mean(mean_logit_diff, ...)\n"
SOURCE_TEST = ("check_mean(mean_logit_diff, model)\n### BEGIN HIDDEN TESTS\n"
               "check_more(mean_logit_diff, model, strict=True)\n### END HIDDEN TESTS\n")
INTRO = "## 1.1 Mean logit difference\n\nWrite the mean logit difference over the batch of prompts."
QUESTION = "## 1.2 What the number says\n\nSay in two sentences what a mean logit difference of 3 tells us."


def cell(kind: str, source: str, grade_id: str | None = None, **flags: object) -> NotebookNode:
    new = new_code_cell(source) if kind == "code" else new_markdown_cell(source)
    if grade_id is not None:
        new.metadata["nbgrader"] = {"grade_id": grade_id, "grade": False, "solution": False, "locked": False, **flags}
    return new


def release_cells(test: str) -> list[NotebookNode]:
    """The assignment's cells: a read-only intro, a function to write, its test, a written answer."""
    return [
        cell("markdown", INTRO, "intro", locked=True),
        cell("code", "def mean_logit_diff(logits):\n    raise NotImplementedError\n", "answer_mean", solution=True),
        cell("code", test, "test_mean", grade=True, points=2, locked=True),
        cell("markdown", QUESTION, "question", locked=True),
        cell("markdown", "YOUR ANSWER HERE", "written", solution=True, grade=True, points=1),
    ]


@pytest.fixture
def release() -> NotebookNode:
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return new_notebook(cells=release_cells(RELEASED_TEST), metadata={"kernelspec": kernel})


@pytest.fixture
def source() -> NotebookNode:
    return new_notebook(cells=release_cells(SOURCE_TEST))


def learner_notebook(release: NotebookNode, strip_metadata: bool = False) -> NotebookNode:
    """A learner's copy of ``release``: the answers written, the test cell tampered with, a cell added
    after the answer, outputs of a run left in."""
    cells = [nbformat.from_dict(dict(c, metadata=nbformat.from_dict(dict(c.metadata)))) for c in release.cells]
    cells[1].source = "def mean_logit_diff(logits):\n    return logits.mean()\n"
    cells[1].outputs = [nbformat.v4.new_output("stream", text="ran\n")]
    cells[2].source = "pass  # no test here"
    cells[4].source = "The right name is about 20 times as likely."
    cells.insert(2, new_code_cell("print(mean_logit_diff)"))  # the learner's own cell
    if strip_metadata:
        for c in cells:
            c.metadata.pop("nbgrader", None)
    return new_notebook(cells=cells)


def test_grade_id_is_a_string_or_none() -> None:
    assert restore.grade_id(cell("code", "x", "answer")) == "answer"
    assert restore.grade_id(cell("code", "x")) is None
    odd = cell("code", "x", "answer")
    odd.metadata.nbgrader["grade_id"] = ["a", "list"]  # a hostile notebook's metadata
    assert restore.grade_id(odd) is None
    odd.metadata["nbgrader"] = "not a dict"
    assert restore.grade_id(odd) is None and not restore.is_answer(odd) and not restore.is_test(odd)


def test_release_cells_come_back_with_the_instructor_tests_and_the_learner_answers(release, source) -> None:
    learner = learner_notebook(release)
    rebuilt = restore.rebuild(learner, release, source)
    cells = rebuilt.notebook.cells
    assert [restore.grade_id(c) for c in cells] == ["intro", "answer_mean", None, "test_mean", "question", "written"]
    assert cells[1].source == learner.cells[1].source and cells[5].source == learner.cells[5].source
    assert cells[2].source == "print(mean_logit_diff)" and "nbgrader" not in cells[2].metadata
    assert cells[3].source == SOURCE_TEST  # the learner's "pass" is not what runs
    assert all(c.outputs == [] and c.execution_count is None for c in cells if c.cell_type == "code")
    assert rebuilt.checks == {3: ("check_mean", "mean_logit_diff")}
    assert rebuilt.matched_by_content is False
    assert rebuilt.notebook.metadata == release.metadata


def test_a_deleted_test_cell_is_the_source_one_again(release, source) -> None:
    learner = learner_notebook(release)
    del learner.cells[3]  # the test cell
    cells = restore.rebuild(learner, release, source).notebook.cells
    assert [c.source for c in cells if restore.is_test(c)] == [SOURCE_TEST]


def test_stripped_metadata_is_matched_by_content(release, source) -> None:
    learner = learner_notebook(release, strip_metadata=True)
    rebuilt = restore.rebuild(learner, release, source)
    cells = rebuilt.notebook.cells
    assert rebuilt.matched_by_content is True
    # the learner's edited test cell, no longer told by its id, stays as a cell of theirs; the test runs as written
    assert [restore.grade_id(c) for c in cells] == ["intro", "answer_mean", None, None, "test_mean", "question", "written"]
    assert cells[1].source == "def mean_logit_diff(logits):\n    return logits.mean()\n"  # by the name it defines
    assert cells[6].source == "The right name is about 20 times as likely."  # between the same read-only cells
    assert cells[3].source == "pass  # no test here" and cells[4].source == SOURCE_TEST


def test_an_answer_defining_another_function_is_not_taken_for_the_answer(release, source) -> None:
    learner = learner_notebook(release, strip_metadata=True)
    learner.cells[1].source = "def something_else(logits):\n    return 0\n"
    cells = restore.rebuild(learner, release, source).notebook.cells
    assert cells[[restore.grade_id(c) for c in cells].index("answer_mean")].source == release.cells[1].source


def test_a_notebook_belongs_to_the_assignment_by_its_ids_or_its_read_only_text(release) -> None:
    own = restore.marks(release)
    assert {"id:intro", "id:written", f"text:{INTRO}", f"text:{QUESTION}"} <= own
    assert not any(mark.startswith("text:YOUR ANSWER") for mark in own)  # an answer's text tells nothing
    assert restore.belongs(learner_notebook(release), own)
    assert restore.belongs(learner_notebook(release, strip_metadata=True), own)
    other = new_notebook(cells=[cell("markdown", INTRO, "other_intro", locked=True)])
    assert not restore.belongs(other, own)  # ids decide when there are ids
    assert not restore.belongs(new_notebook(cells=[new_markdown_cell("# Another notebook")]), own)


def test_the_sandbox_runs_harvest_calls_instead_of_the_tests(release, source) -> None:
    learner = learner_notebook(release)
    learner.cells.insert(4, cell("code", "assert True\n", "test_plain", grade=True, points=1, locked=True))
    release.cells.insert(3, cell("code", "assert True\n", "test_plain", grade=True, points=1, locked=True))
    source.cells.insert(3, cell("code", "assert True\n", "test_plain", grade=True, points=1, locked=True))
    rebuilt = restore.rebuild(learner, release, source)
    sandboxed = restore.for_sandbox(rebuilt)
    tests = [c.source for c in sandboxed.cells if restore.is_test(c)]
    assert tests == [f"import {restore.HARVEST_MODULE}\n{restore.HARVEST_MODULE}.collect('test_mean', 'check_mean', "
                     "globals().get('mean_logit_diff'))", "pass"]
    assert not any("HIDDEN" in c.source for c in sandboxed.cells)
    assert any("HIDDEN" in c.source for c in rebuilt.notebook.cells)  # the rebuilt notebook itself is not changed
