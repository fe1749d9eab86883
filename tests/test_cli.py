"""Bad setups fail before the expensive part: one line naming the flag/file/row/teacher, no traceback, exit != 0,
and (for a teacher that does not answer) no SFT stage run. Bugs keep their traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from citing_trl.cli import run_main
from citing_trl.errors import ConfigError
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "recipes" / "configs" / "citing_demo.yaml"


def run_recipe(tmp_path, *flags, script="recipes/citing.py"):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(REPO / script), *flags], capture_output=True, text=True, env=env,
                          timeout=300, cwd=tmp_path)
    return proc


def assert_one_line_error(proc, *needles):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.mark.slow
def test_negative_rounds_fail_at_once(tmp_path):
    proc = run_recipe(tmp_path, "--config", str(DEMO), "--output_dir", str(tmp_path / "run"), "--num_rounds", "-1")
    assert_one_line_error(proc, "--num_rounds", "-1")
    assert not (tmp_path / "run").exists()  # nothing ran


@pytest.mark.parametrize("flags, needles", [
    (("--rollout_mode", "sideways"), ("--rollout_mode", "sideways")),
    (("--teacher_max_tokens", "0"), ("--teacher_max_tokens",)),
    (("--teacher_backend", "grpc"), ("--teacher_backend",)),
    (("--dataset", "boolq:missing_boolq.jsonl+nq_open:nq.jsonl@10"), ("--dataset", "missing_boolq.jsonl")),
    (("--dataset_split", "dev"), ("--dataset_split",)),
    (("--sft_adapter", "no_such_adapter"), ("--sft_adapter",)),
    (("--rubric", "no_such_rubric.json"), ("--rubric",)),
])
def test_bad_flags_fail_at_parse_time(flags, needles):
    """The recipe's own parser (in-process, so each case costs no interpreter start)."""
    from trl import ModelConfig, TrlParser

    from citing_trl.citing_config import CitingArguments, CitingConfig, RolloutArguments, TeacherArguments
    from citing_trl.sft import DataArguments

    parser = TrlParser((DataArguments, CitingConfig, ModelConfig, CitingArguments, TeacherArguments, RolloutArguments))
    with pytest.raises(ConfigError) as err:
        parser.parse_args_and_config(args=["--config", str(DEMO), *flags])
    message = str(err.value)
    assert "\n" not in message and all(n in message for n in needles), message


@pytest.mark.slow
def test_malformed_row_names_file_and_row(tmp_path, tiny_model_dir):
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"instruction": "Say hi.", "output": "Hi"}) + "\n{not json\n")
    proc = run_recipe(tmp_path, "--config", str(DEMO), "--output_dir", str(tmp_path / "run"),
                      "--model_name_or_path", str(tiny_model_dir), "--dataset", str(data))
    assert_one_line_error(proc, "rows.jsonl", "line 2")
    assert not (tmp_path / "run" / "sft" / "adapter_config.json").exists()


@pytest.mark.slow
def test_unreachable_teacher_fails_before_sft(tmp_path, tiny_model_dir):
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens here
    proc = run_recipe(tmp_path, "--config", str(DEMO), "--output_dir", str(tmp_path / "run"),
                      "--model_name_or_path", str(tiny_model_dir), "--teacher_backend", "openai",
                      "--teacher_base_url", url, "--teacher_model", "teacher", "--teacher_timeout", "5")
    line = assert_one_line_error(proc, "--teacher_base_url", url)
    assert "nothing was trained" in line
    assert not (tmp_path / "run" / "sft").exists()


def test_run_main_separates_user_errors_from_bugs(capsys):
    def bad_flag():
        raise ConfigError("--num_rounds must be a whole number >= 1, got -1")

    with pytest.raises(SystemExit) as stop:
        run_main(bad_flag)
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip() == "error: --num_rounds must be a whole number >= 1, got -1"

    def bug():
        return {}["missing"]

    with pytest.raises(KeyError):  # a bug is not dressed up as a user error: its traceback stays
        run_main(bug)
