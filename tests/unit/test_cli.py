"""Command line: `python -m patchlab patch` writes JSON, self-contained HTML and PNG; bad args fail clearly."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from patchlab.patching import reference_patching

ENV = {**os.environ, "PATCHLAB_MODEL": "ioi-mini"}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "patchlab", *args], capture_output=True, text=True, env=ENV,
                          timeout=600)


@pytest.mark.slow  # a fresh interpreter loads torch and the model
def test_patch_writes_three_files(tmp_path, model, classic, classic_run):
    proc = run_cli("patch", "--model", "ioi-mini", "--component", "resid_pre", "--method", "reference",
                   "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "patching resid_pre" in proc.stdout  # the progress bar (stdout, as in notebooks)
    assert proc.stderr == "", proc.stderr
    record = json.loads((tmp_path / "resid_pre.json").read_text())
    for key in ("model", "component", "str_tokens", "clean_tokens", "corrupted_tokens", "answer_tokens",
                "clean_logit_diff", "corrupted_logit_diff", "values"):
        assert key in record
    assert record["model"] == "ioi-mini" and record["component"] == "resid_pre"
    assert record["clean_tokens"] == classic.clean_tokens.tolist()
    assert record["corrupted_tokens"] == classic.corrupted_tokens.tolist()
    assert record["answer_tokens"] == classic.answer_tokens.tolist()
    assert record["str_tokens"] == classic.str_tokens
    _, cache, _, metric = classic_run
    assert record["clean_logit_diff"] == torch.tensor(metric.clean_logit_diff).item()
    expected = reference_patching(model, classic.corrupted_tokens, cache, metric, progress=False)
    assert torch.allclose(torch.tensor(record["values"]), expected, atol=1e-6)
    html = (tmp_path / "resid_pre.html").read_text()
    assert "<script src=\"https://cdn.plot.ly" not in html and "Plotly.newPlot" in html
    assert len(html) > 1_000_000  # plotly.js is inlined, so the page opens offline
    assert (tmp_path / "resid_pre.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # fresh interpreters, one per bad argument
def test_bad_arguments_exit_nonzero_with_one_line(tmp_path):
    proc = run_cli("patch", "--component", "resid_middle", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "resid_middle" in proc.stderr
    proc = run_cli("patch", "--model", "gpt5", "--out", str(tmp_path))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    proc = run_cli("patch", "--model", "ioi-mini", "--out", str(target))
    assert proc.returncode != 0 and "not a folder" in proc.stderr
    assert target.read_text() == "keep me"
