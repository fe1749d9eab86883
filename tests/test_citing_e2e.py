"""CITING end to end with real parts, and crash safety of the whole recipe.

- SmolLM2-135M-Instruct student + a real `transformers serve` teacher on 127.0.0.1: one round.
- `kill -9` of `recipes/citing.py` inside and between rounds: the rerun finishes with the same artifacts as
  an uninterrupted run and the teacher server answers no request twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from trl import ModelConfig

from citing_trl.citing_config import CitingArguments, CitingConfig, RolloutArguments, TeacherArguments
from citing_trl.jsonl import read_jsonl
from citing_trl.pipeline import CitingPipeline
from citing_trl.sft import DataArguments
from citing_trl.verification import is_identical
from tests.conftest import REPO
from tests.helpers.fault_server import FaultServer


def completion_loss(model_dir, adapter, rows) -> float:
    """Mean NLL of the revision tokens given pr(x, c, r(k)) under base + adapter (Eq. 4's loss)."""
    import torch

    from citing_trl.models import load_model
    from citing_trl.prompts import revision_messages

    model, tok = load_model(str(model_dir), adapter=str(adapter))
    total, count = 0.0, 0
    for r in rows:
        prompt = tok.apply_chat_template(
            revision_messages(r["instruction"], r["input"], r["criteria"], r["response"]),
            tokenize=False, add_generation_prompt=True,
        )
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        c_ids = tok(r["revision"], add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p_ids + c_ids])
        labels = torch.tensor([[-100] * len(p_ids) + c_ids])
        with torch.no_grad():
            out = model(input_ids=ids, labels=labels)
        total += out.loss.item() * len(c_ids)
        count += len(c_ids)
    return total / count


@pytest.mark.slow
def test_smollm2_with_served_teacher(tmp_path, smollm2_dir, serve_smollm2):
    data = DataArguments(dataset="demo", max_samples=8)
    training = CitingConfig(
        output_dir=str(tmp_path / "run"), use_cpu=True, bf16=False, report_to="none", max_length=512,
        per_device_train_batch_size=4, num_train_epochs=2, save_strategy="no", gradient_checkpointing=False,
        logging_steps=1, learning_rate=1e-3,
    )
    model = ModelConfig(model_name_or_path=str(smollm2_dir), use_peft=True, lora_r=8, lora_alpha=16,
                        lora_target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    citing = CitingArguments(
        num_rounds=1, num_instructions=4, sft_num_train_epochs=1, rubric="default",
        # a 135M teacher rarely finishes within a small budget; keep its cut-off revisions for this test
        reject_truncated=False,
    )
    rollout = RolloutArguments(rollout_max_new_tokens=32, rollout_batch_size=4).build()
    teacher = TeacherArguments(teacher_backend="openai", teacher_base_url=serve_smollm2.base_url,
                               teacher_model=serve_smollm2.model, teacher_max_tokens=64,
                               teacher_max_concurrency=2).build()
    final = CitingPipeline(data, training, model, citing, teacher, rollout).run()
    run = tmp_path / "run"
    summary = json.loads((run / "round_0" / "summary.json").read_text())
    assert summary["teacher_usage"]["requests_sent"] == 4
    assert sum(summary["revision_counts"].values()) == 4
    accepted = read_jsonl(run / "round_0" / "revisions.jsonl")
    assert accepted, f"no usable revision from the served teacher: {summary['revision_counts']}"
    assert all(a["revision"] for a in accepted)
    # keep_identical (default on): a revision equal to the draft is a training row, counted apart
    counts = summary["revision_counts"]
    identical = [a for a in accepted if is_identical(a["response"], a["revision"])]
    assert len(identical) == counts.get("kept_identical", 0)
    assert len(accepted) - len(identical) == counts.get("accepted", 0) + counts.get("kept_truncated", 0)
    # the curriculum round moved the student towards the teacher's revisions
    before = completion_loss(smollm2_dir, run / "sft", accepted)
    after = completion_loss(smollm2_dir, final, accepted)
    assert after < before, (before, after)
    card = (final / "README.md").read_text()
    assert serve_smollm2.model in card


# --------------------------------------------------------------------------------------------------
# kill -9 inside and between rounds
# --------------------------------------------------------------------------------------------------


def revision_reply(messages: list[dict]) -> str:
    """A deterministic, plausible revision for any request (distinct per request)."""
    text = messages[-1]["content"]
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return f"A clearer and more complete answer, version {digest}, with one concrete example."


def recipe_yaml(tmp_path: Path, model_dir: Path, base_url: str, out: Path) -> Path:
    cfg = {
        "model_name_or_path": str(model_dir), "use_peft": True, "lora_r": 4, "lora_alpha": 8,
        "lora_target_modules": ["q_proj", "v_proj"], "dataset": "demo", "max_samples": 12,
        "num_rounds": 2, "num_instructions": 10, "rubric": "default", "rollout_max_new_tokens": 8,
        "rollout_do_sample": True,  # seeded; greedy decoding of a random model repeats one answer every round
        "rollout_batch_size": 2, "teacher_backend": "openai", "teacher_base_url": base_url,
        "teacher_model": "fault-teacher", "teacher_max_concurrency": 2, "teacher_max_tokens": 32,
        "teacher_api_key_env": "CITING_TEST_KEY", "output_dir": str(out), "max_length": 1024,
        "per_device_train_batch_size": 4, "num_train_epochs": 1, "save_strategy": "no", "report_to": "none",
        "gradient_checkpointing": False, "use_cpu": True, "bf16": False, "seed": 7, "learning_rate": 1e-3,
    }
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def launch(cfg: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "CITING_TEST_KEY": "sk-test-DO-NOT-LEAK-123", "OMP_NUM_THREADS": "2"}
    return subprocess.Popen([sys.executable, str(REPO / "recipes" / "citing.py"), "--config", str(cfg)],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


def wait_for(proc, predicate, timeout=300.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    raise TimeoutError("condition not reached")


def cache_lines(out: Path) -> int:
    path = out / "teacher_cache.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def kill9(proc):
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def artifacts(out: Path) -> dict:
    result = {}
    for k in range(2):
        revs = read_jsonl(out / f"round_{k}" / "revisions.jsonl")
        result[k] = sorted((r["id"], r["response"], r["revision"]) for r in revs)
    return result


@pytest.mark.slow
def test_kill9_inside_and_between_rounds(tmp_path, tiny_model_dir):
    with FaultServer(latency=0.25, reply=revision_reply) as server:
        # reference: one uninterrupted run
        ref_out = tmp_path / "reference"
        ref = launch(recipe_yaml(tmp_path, tiny_model_dir, server.base_url, ref_out), tmp_path / "ref.log")
        assert ref.wait(timeout=900) == 0, (tmp_path / "ref.log").read_text()[-3000:]
        reference = artifacts(ref_out)
        server.reset_counts()

        out = tmp_path / "killed"
        cfg = recipe_yaml(tmp_path, tiny_model_dir, server.base_url, out)
        log = tmp_path / "killed.log"
        def run_until_then_kill(predicate):
            p = launch(cfg, log)
            assert wait_for(p, predicate), log.read_text()[-3000:]
            kill9(p)

        # The server holds requests past a chosen count, so each kill lands with requests in flight that were
        # never answered: a kill cannot race a just-sent answer, and counts of answers stay exact.
        # Before SFT the recipe checks the teacher with one small request (cached): the cache's first line.
        # 1) inside round 0: the check + 2 of 10 teacher answers received and cached, the next ones in flight
        server.hold_from_now_after(3)
        run_until_then_kill(lambda: cache_lines(out) >= 3 and server.held > 0)
        server.stop_holding()
        assert cache_lines(out) == 3
        # 2) between rounds: round 0 finished, round 1 not
        run_until_then_kill(lambda: (out / "round_0" / "summary.json").exists())
        assert not (out / "round_1" / "summary.json").exists()
        # 3) inside round 1, during the teacher's revisions
        server.hold_from_now_after(4)
        run_until_then_kill(lambda: cache_lines(out) >= 15 and server.held > 0)
        server.stop_holding()
        assert cache_lines(out) == 1 + 10 + 4
        # 4) finish
        p = launch(cfg, log)
        assert p.wait(timeout=900) == 0, log.read_text()[-3000:]

        assert artifacts(out) == reference
        assert (out / "final" / "adapter_config.json").exists()
        answered = dict(server.successes)
        # 20 revisions + the teacher check, each answered exactly once over four launches
        assert len(answered) == 21 and set(answered.values()) == {1}, "a teacher request was paid for twice"
        # the key never reaches disk
        for f in out.rglob("*"):
            if f.is_file() and f.suffix in {".json", ".jsonl", ".md", ".txt"}:
                assert "DO-NOT-LEAK" not in f.read_text(errors="ignore"), f
        assert "DO-NOT-LEAK" not in log.read_text(errors="ignore")
