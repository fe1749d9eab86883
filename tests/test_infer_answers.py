"""recipes/infer.py writes the answers file that recipes/evaluate.py reads (contract C6)."""

import json
import os
import subprocess
import sys

import pytest

from citing_trl.jsonl import read_jsonl
from citing_trl.memory import RECORD_KEYS
from tests.conftest import REPO

FIXTURE = REPO / "tests" / "fixtures" / "trivia_qa.jsonl"


def run(*argv):
    return subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600)


@pytest.mark.slow
def test_plain_answers_need_no_rubric_and_feed_the_evaluation(tmp_path, tiny_model_dir):
    out = tmp_path / "base"
    args = ["recipes/infer.py", "--model_name_or_path", tiny_model_dir, "--dataset", f"trivia_qa:{FIXTURE}",
            "--num_revisions", "0", "--max_new_tokens", "4", "--output_dir", out,
            "--embedding_model", "/no/such/encoder"]  # never loaded with --num_revisions 0
    proc = run(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_jsonl(out / "answers.jsonl")
    from citing_trl.data import load_instructions

    # a source file is split 8:1:1 by row id (contract C5); --dataset_split defaults to train
    assert [r["id"] for r in rows] == load_instructions(f"trivia_qa:{FIXTURE}", split="train")["id"]
    for r in rows:
        assert set(r) == {"id", "source", "instruction", "input", "answers", "response", "responses"}
        assert r["source"] == "trivia_qa" and r["answers"] and r["responses"] == [r["response"]]
    memory = json.loads((out / "memory.json").read_text())  # peak memory per stage (citing_trl/memory.py)
    assert list(memory["stages"]) == ["load", "inference"] and set(memory["timings"]) == {"load_s", "inference_s"}
    assert all(tuple(r) == RECORD_KEYS for r in memory["stages"].values())
    # a rerun resumes (nothing regenerated); another model in the same folder is refused in one line
    step0 = (out / "step_0.jsonl").stat().st_mtime_ns
    assert run(*args).returncode == 0 and (out / "step_0.jsonl").stat().st_mtime_ns == step0
    other = run(*[a if a != tiny_model_dir else tmp_path / "other" for a in args])
    assert other.returncode == 2 and "holds answers of a different run (model_name_or_path" in other.stderr
    ev = run("recipes/evaluate.py", "--answers", f"base={out / 'answers.jsonl'}", "--judge_backend", "none",
             "--output_dir", tmp_path / "eval")
    assert ev.returncode == 0, ev.stderr[-2000:]
    gold = json.loads((tmp_path / "eval" / "gold.json").read_text())
    assert gold["base"]["trivia_qa"]["n"] == len(rows)


def test_demo_inference_config_parses():
    from trl import TrlParser

    from citing_trl.self_revision import AnswerGenerationArguments, InferenceArguments
    from citing_trl.sft import DataArguments

    data_args, args, _ = TrlParser((DataArguments, InferenceArguments, AnswerGenerationArguments)).parse_args_and_config(
        args=["--config", str(REPO / "recipes" / "configs" / "infer" / "demo.yaml"), "--adapter", "x"])
    assert (data_args.dataset, data_args.dataset_split, args.num_revisions) == ("demo", "test", 0)
