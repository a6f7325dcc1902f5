"""``autograder release``'s checks of a solution's source, before nbgrader runs (autograder/release.py)."""

from __future__ import annotations

import pytest

from grading import ROOT, snapshot  # tests/grading.py


def test_a_hidden_test_calling_an_unregistered_check_is_refused_at_release_with_its_line(tmp_path, monkeypatch):
    from autograder import release

    source = (ROOT / "solutions/logit_difference/logit_difference.md").read_text(encoding="utf-8")
    broken = source.replace("check_mean_logit_diff(mean_logit_diff, model)", "check_mean_logit_dif(mean_logit_diff, model)")
    assert broken != source
    (tmp_path / "solutions" / "logit_difference").mkdir(parents=True)
    (tmp_path / "solutions" / "logit_difference" / "logit_difference.md").write_text(broken, encoding="utf-8")
    monkeypatch.setattr(release, "SOLUTIONS_DIR", tmp_path / "solutions")
    committed = snapshot(ROOT / "exercises") | snapshot(ROOT / "solutions")
    with pytest.raises(release.ReleaseError, match=r"logit_difference.md:\d+: the test cell '\w+' calls "
                                                   "check_mean_logit_dif, which no module of autograder/checks/ declares"):
        release.release(["logit_difference"], release_dir=tmp_path / "exercises")
    assert snapshot(ROOT / "exercises") | snapshot(ROOT / "solutions") == committed
