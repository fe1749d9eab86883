"""Multi-node readiness on CPU: every accelerate config loads with accelerate's own loader, and two gloo ranks
prove (or refuse) a shared output folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_multi_node_config():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    config = load_config_from_file(str(REPO / "accelerate_configs" / "multi_node.yaml"))
    assert config.distributed_type == DistributedType.MULTI_GPU
    assert (config.num_machines, config.num_processes, config.machine_rank) == (2, 16, 0)
    assert config.main_process_ip and config.main_process_port == 29500 and config.rdzv_backend == "static"
    assert "shared" in (REPO / "accelerate_configs" / "multi_node.yaml").read_text()


def launch_two_ranks(tmp_path: Path, *args: str) -> list[dict]:
    # in-process tests earlier in the session (a PartialState) leave ACCELERATE_*/rank variables in os.environ;
    # inherited, e.g. ACCELERATE_USE_CPU would make the launcher start one process instead of two
    leaked = ("ACCELERATE_", "MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(leaked)}
    env.update(PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
         str(REPO / "accelerate_configs" / "cpu_2proc.yaml"), "--main_process_port", "0",
         str(REPO / "tests" / "helpers" / "shared_dir_check.py"), str(tmp_path), *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    missing = [rank for rank in (0, 1) if not (tmp_path / f"result.{rank}.json").exists()]
    assert not missing, f"rank(s) {missing} wrote no result:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return [json.loads((tmp_path / f"result.{rank}.json").read_text()) for rank in (0, 1)]


@pytest.mark.slow
def test_two_ranks_see_the_same_output_folder(tmp_path):
    results = launch_two_ranks(tmp_path)
    assert [r["ok"] for r in results] == [True, True]
    assert results[0]["dir"] == results[1]["dir"]
    assert not list((tmp_path / "shared").glob(".citing-shared-check-*"))  # the probe file is removed


@pytest.mark.slow
def test_a_folder_that_is_not_shared_is_refused_on_every_rank(tmp_path):
    results = launch_two_ranks(tmp_path, "per-rank")
    assert [r["ok"] for r in results] == [False, False]
    for r in results:
        assert "not shared" in r["error"] and "rank 1 on" in r["error"] and "rank 0 on" not in r["error"]
