"""bench/run_all.py: every benchmark runs as a child, its figures land in one table with the child's peak RSS.
Checks the harness only (small sizes); no timing is asserted."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_run_all_builds_one_table_with_memory_next_to_each_benchmark(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "run_all.py"), "--quick", "--only", "judge", "teacher",
                           "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    report = json.loads((tmp_path / "latest.json").read_text())
    assert report["quick"] is True and report["machine"]["cpus"] >= 1
    by_name = {r["name"]: r for r in report["results"]}
    assert set(by_name) == {"judge", "teacher"}
    for res in by_name.values():
        assert res["returncode"] == 0 and res["rows"] and res["peak_rss_gib"] > 0.01  # a Python process, measured
    judge = by_name["judge"]["data"]
    assert judge["per_aspect"] / judge["joint"] == judge["ratio"]
    teacher_rows = by_name["teacher"]["data"]
    assert [r["concurrency"] for r in teacher_rows] == [1, 4]
    md = (tmp_path / "latest.md").read_text()
    assert "| benchmark | measurement | figure | ratio | peak RSS | peak GPU | bench wall |" in md
    assert md.count("calls/pair") == 2 and "teacher client vs ideal concurrency" in md
    assert "judge" in proc.stdout and "peak RSS" in proc.stdout


@pytest.mark.slow
def test_a_failing_benchmark_is_reported_not_hidden(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "run_all.py"), "--quick", "--only", "rollouts",
                           "--model", str(tmp_path / "no-such-model"), "--out", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    (res,) = json.loads((tmp_path / "latest.json").read_text())["results"]
    assert res["returncode"] != 0 and res["error"] and res["rows"] == []
    assert "failed" in (tmp_path / "latest.md").read_text()


@pytest.mark.slow
def test_partial_runs_combine_into_one_table(tmp_path):
    for name in ("judge", "teacher"):
        proc = subprocess.run([sys.executable, str(REPO / "bench" / "run_all.py"), "--quick", "--only", name, "--out",
                               str(tmp_path / name)], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "run_all.py"), "--combine", str(tmp_path / "teacher"),
                           str(tmp_path / "judge"), "--out", str(tmp_path / "all")], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "all" / "latest.json").read_text())
    assert [r["name"] for r in report["results"]] == ["teacher", "judge"]  # benchmark order, not argument order
    md = (tmp_path / "all" / "latest.md").read_text()
    assert md.index("teacher client") < md.index("calls/pair")


@pytest.mark.slow
def test_gpu_sft_bench_runs_every_mode_at_a_tiny_shape_on_cpu(tmp_path):
    """bench/bench_gpu_sft.py is meant for a GPU (LLaMA-7B shape); at the tiny shape on CPU it must still train
    each mode and report tokens/s and an MFU from the given peak."""
    out = tmp_path / "gpu_sft.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "bench_gpu_sft.py"), "--shape", "tiny", "--device", "cpu",
                           "--dtype", "float32", "--steps", "2", "--warmup", "1", "--batch-size", "2",
                           "--peak-tflops", "1", "--modes", "sft", "citing", "sft_packing", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert [r["mode"] for r in report["results"]] == ["sft", "citing", "sft_packing"]
    for r in report["results"]:
        assert "error" not in r, r
        assert r["steps_measured"] == 2 and r["tokens_per_s"] > 0 and r["tokens_per_step"] > 0
        assert 0 < r["mfu"] == r["tflops"] / 1.0
    assert "vs sft" in proc.stdout
