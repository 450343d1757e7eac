"""metrics.jsonl: a torn last line (a kill mid-append) is dropped, other damage is named."""

from __future__ import annotations

import json

import pytest

from denoise_runner import run_inline
from equiformer.training.metrics import METRICS_NAME, read_metrics

GOOD = [{"kind": "train", "step": 1, "loss": 2.0}, {"kind": "train", "step": 2, "loss": 1.5}]


def _write(path, text):
    path.write_text("".join(json.dumps(r) + "\n" for r in GOOD) + text)
    return path


def test_torn_last_line_is_dropped_with_a_warning(tmp_path):
    path = _write(tmp_path / METRICS_NAME, '{"kind": "train", "step": 3, "lo')
    with pytest.warns(UserWarning, match=rf"{METRICS_NAME} line 3: dropping an incomplete"):
        assert read_metrics(path) == GOOD
    assert read_metrics(_write(tmp_path / "blank.jsonl", "\n\n")) == GOOD


@pytest.mark.parametrize("bad", ['{"kind": "tr\n', "[1, 2]\n"])
def test_damaged_line_in_the_middle_is_named(tmp_path, bad):
    path = _write(tmp_path / METRICS_NAME, bad + json.dumps(GOOD[0]) + "\n")
    with pytest.raises(ValueError, match=rf"{path} line 3 is not a JSON"):
        read_metrics(path)


def test_resume_after_a_torn_append(tmp_path, capsys):
    assert run_inline(tmp_path, "--steps", "10", "--stop-at-step", "2") == 0
    path = tmp_path / METRICS_NAME
    text = path.read_text()
    path.write_text(text + '{"kind": "train", "step": 3, "lo')  # killed mid-append
    with pytest.warns(UserWarning, match="incomplete last record"):
        assert run_inline(tmp_path, "--resume", "--stop-at-step", "3") == 0
    steps = [r["step"] for r in read_metrics(path) if r["kind"] == "train"]
    assert steps == [1, 2, 3]
    # damage elsewhere stops the resume with one line naming the file and the line
    path.write_text("garbage\n" + path.read_text())
    capsys.readouterr()
    assert run_inline(tmp_path, "--resume", "--stop-at-step", "4") == 2
    error = capsys.readouterr().err
    assert f"{path} line 1 is not a JSON record" in error and "Traceback" not in error
