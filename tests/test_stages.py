"""citing_trl.stages: a finished stage is skipped on a rerun; a crashed one leaves no marker and runs again."""

from __future__ import annotations

import json

import pytest

from citing_trl.stages import is_done, read_marker, run_stage, write_marker


def test_a_stage_runs_once_and_a_rerun_gets_its_record_back(tmp_path):
    marker = tmp_path / "deep" / "stage.done"
    calls = []

    def work():
        calls.append(1)
        return {"wall_s": 1.5}

    first = run_stage(marker, work, name="demo")
    assert first.ran and first.record == {"wall_s": 1.5} and calls == [1]
    assert is_done(marker) and json.loads(marker.read_text()) == {"wall_s": 1.5}
    again = run_stage(marker, work, name="demo")
    assert not again.ran and again.record == {"wall_s": 1.5} and calls == [1]  # marker present: skipped


def test_a_crashed_stage_leaves_no_marker_and_runs_again(tmp_path):
    marker = tmp_path / "stage.done"

    def crash():
        raise KeyboardInterrupt("killed mid-stage")

    with pytest.raises(KeyboardInterrupt):
        run_stage(marker, crash)
    assert not is_done(marker) and list(tmp_path.iterdir()) == []
    result = run_stage(marker, lambda: None)
    assert result.ran and result.record == {} and read_marker(marker) == {}


def test_marker_written_by_older_code_as_plain_text_counts_as_done(tmp_path):
    marker = tmp_path / "done"
    marker.write_text("ok\n")  # RAFT's marker before the helper
    result = run_stage(marker, lambda: pytest.fail("a finished stage must not run again"))
    assert not result.ran and result.record == {}


def test_write_marker_is_atomic(tmp_path, monkeypatch):
    marker = tmp_path / "stage.done"
    write_marker(marker, {"n": 1})

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("citing_trl.stages.os.replace", broken_replace)
    with pytest.raises(OSError):
        write_marker(marker, {"n": 2})
    assert read_marker(marker) == {"n": 1}  # the old marker is whole, never half overwritten
