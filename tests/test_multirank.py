"""recipes/citing.py and recipes/infer.py under two ranks (accelerate_configs/cpu_2proc.yaml: two gloo processes
standing in for two GPUs), on the tiny random model with a loopback teacher.

- infer: each rank answers its share into its own part file, rank 0 joins them; the files equal a one-process
  run's, and a killed run (parts left on disk) resumes without regenerating finished rows.
- CITING: rollouts sharded disjoint and complete, the teacher asked once per row, identical LoRA weights on both
  ranks after each round, one final/; a kill -9 between rounds resumes without asking the teacher again.
- A condition the user fixes by a setting exits 2 on both ranks with one ``error:`` line.
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

from citing_trl.cli import run_main
from citing_trl.distributed import MainProcessError, on_main
from citing_trl.errors import ConfigError
from citing_trl.jsonl import read_jsonl
from citing_trl.pipeline import CitingPipeline
from citing_trl.round_result import NoRevisionsError
from citing_trl.sft import DataArguments
from tests.conftest import REPO, tiny_citing_parts
from tests.helpers.fault_server import FaultServer

CPU_2PROC = REPO / "accelerate_configs" / "cpu_2proc.yaml"
RANK_DIGEST = REPO / "tests" / "helpers" / "rank_digest.py"


def launcher_env() -> dict:
    # in-process tests earlier in the session (a PartialState) leave ACCELERATE_*/rank variables in os.environ;
    # inherited, e.g. ACCELERATE_USE_CPU would make the launcher start one process instead of two
    leaked = ("ACCELERATE_", "MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(leaked)}
    env.update(PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1",
               CITING_TEST_KEY="sk-test-multirank")
    return env


def two_ranks(script: Path, *args) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_2PROC),
            "--main_process_port", "0", str(script), *map(str, args)]


def run_two_ranks(script: Path, *args, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(two_ranks(script, *args), cwd=REPO, env=launcher_env(), capture_output=True, text=True,
                          timeout=timeout)


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (Linux /proc): torch's launcher starts each rank in a session of its own,
    so killing the launcher's process group would leave the ranks running."""
    out = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            out += process_tree(int(child))
    return out


def kill9_all(proc: subprocess.Popen) -> None:
    """kill -9 the launcher and every rank at once, as a crashed machine would."""
    for pid in process_tree(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def assert_exit_2_on_both_ranks(proc: subprocess.CompletedProcess) -> str:
    """The launcher reports each failed rank with its exit code; the recipe printed one error line."""
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-3000:]
    assert log.count("Traceback (most recent call last)") <= 1, log[-4000:]  # the launcher's own, if any
    codes = [line.split(":")[1].split()[0] for line in log.splitlines() if line.strip().startswith("exitcode")]
    assert sorted(codes) == ["2", "2"], log[-3000:]
    errors = error_lines(proc.stderr)
    assert len(errors) == 1, log[-3000:]
    return errors[0]


# --------------------------------------------------------------------------------------------------
# failing together (fast, one process)
# --------------------------------------------------------------------------------------------------


class FakeState:
    def __init__(self, rank: int, world: int):
        self.process_index, self.num_processes, self.is_main_process = rank, world, rank == 0


def test_run_main_prints_the_error_on_rank_0_only(monkeypatch, capsys):
    def fail():
        raise ConfigError("--teacher_max_tokens is too small, got 4", flag="teacher_max_tokens")

    for rank, printed in (("0", True), ("1", False)):
        monkeypatch.setenv("RANK", rank)
        with pytest.raises(SystemExit) as exit_info:
            run_main(fail)
        assert exit_info.value.code == 2
        assert (capsys.readouterr().err == "error: --teacher_max_tokens is too small, got 4\n") is printed


def test_on_main_shares_the_main_process_outcome(monkeypatch):
    import accelerate.utils

    calls = []

    def fail():
        calls.append(1)
        raise NoRevisionsError("round 0: nothing usable")

    with pytest.raises(NoRevisionsError):
        on_main(fail, FakeState(0, 1))
    on_main(fail, FakeState(0, 1), skip=True)  # a finished step is not run again
    assert len(calls) == 1
    # another rank does not run the step; it raises what the main process broadcast
    shared = []
    monkeypatch.setattr(accelerate.utils, "broadcast_object_list", lambda obj, from_process=0: shared or obj)
    on_main(fail, FakeState(1, 2))
    assert len(calls) == 1
    shared.append(("user", "round 0: nothing usable"))
    with pytest.raises(MainProcessError, match="round 0: nothing usable"):
        on_main(fail, FakeState(1, 2))
    shared[0] = ("bug", "KeyError: 'x'")
    with pytest.raises(RuntimeError, match="the main process failed"):
        on_main(fail, FakeState(1, 2))
    assert len(calls) == 1


def test_an_empty_curriculum_names_the_setting_before_sft(tmp_path, tiny_model_dir):
    rows = read_jsonl(REPO / "tests" / "fixtures" / "trivia_qa.jsonl")[:2]  # split 8:1:1 by id: no test row
    data = tmp_path / "two.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pipeline = CitingPipeline(*tiny_citing_parts(tmp_path, tiny_model_dir, DataArguments(
        dataset=f"trivia_qa:{data}", dataset_split="test"), num_rounds=1))
    with pytest.raises(ConfigError, match="the curriculum is empty: .* choose another --dataset or --dataset_split"):
        pipeline.run()
    assert not (tmp_path / "run" / "sft").exists()


def test_no_revision_hint_names_the_setting(tmp_path, tiny_model_dir):
    pipeline = CitingPipeline(*tiny_citing_parts(tmp_path, tiny_model_dir, DataArguments(dataset="demo"),
                                                 teacher_max_tokens=64))
    assert "raise --teacher_max_tokens (now 64)" in pipeline._no_revision_hint({"truncated": 7, "empty": 1})
    assert "--keep_identical true" in pipeline._no_revision_hint({"identical": 8})
    assert "another --teacher_model" in pipeline._no_revision_hint({"echoes_prompt": 8})
    assert "another --revision_gate (now none)" in pipeline._no_revision_hint({"gate_rejected": 8})


# --------------------------------------------------------------------------------------------------
# recipes/infer.py
# --------------------------------------------------------------------------------------------------


QUESTIONS = ["What is the boiling point of water?", "Write a short poem about snow.", "How do I change a tyre?",
             "Name three prime numbers.", "Explain photosynthesis briefly.", "Give me a pancake recipe.",
             "Why is the sky blue?"]


@pytest.mark.slow
def test_infer_two_ranks_match_one_process_and_resume(tmp_path, tiny_model_dir):
    from citing_trl.generation import DecodingConfig
    from citing_trl.models import load_model
    from citing_trl.self_revision import match_rows, self_revise
    from citing_trl.sft import DataArguments, load_rows

    data = tmp_path / "questions.jsonl"
    data.write_text("".join(json.dumps({"instruction": q}) + "\n" for q in QUESTIONS))
    # one process, in this process: the reference files (greedy decoding)
    one = tmp_path / "one"
    rows = match_rows(load_rows(DataArguments(dataset=str(data))), None, "sentence-transformers/all-MiniLM-L6-v2")
    model, tok = load_model(str(tiny_model_dir))
    self_revise(model, tok, rows, 1, DecodingConfig(max_new_tokens=6, batch_size=2, show_progress=False), one)

    two = tmp_path / "two"
    args = ["--model_name_or_path", tiny_model_dir, "--dataset", data, "--num_revisions", 1, "--max_new_tokens", 6,
            "--batch_size", 2, "--output_dir", two]
    t0 = time.time()
    proc = run_two_ranks(REPO / "recipes" / "infer.py", *args)
    print(f"two-rank infer: {time.time() - t0:.1f} s")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    log = proc.stdout + proc.stderr
    # each rank generated its own share (4 + 3 rows), not every row
    assert "student answers r(0): 4 to generate" in log and "student answers r(0): 3 to generate" in log, log[-3000:]
    assert proc.stdout.count("wrote 7 instructions") == 1
    for name in ("step_0.jsonl", "step_1.jsonl", "answers.jsonl"):
        assert (two / name).read_bytes() == (one / name).read_bytes(), name
    assert not list(two.glob("*.rank*.jsonl")), "the part files are joined and removed"

    # a run killed in step 1: r(0) joined, some of r(1) in each rank's part file (one torn line)
    step1 = read_jsonl(two / "step_1.jsonl")
    (two / "step_1.jsonl").unlink()
    (two / "answers.jsonl").unlink()
    (two / "step_1.rank0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in step1[0:4:2]) + '{"id": "x", "res')
    (two / "step_1.rank1.jsonl").write_text(json.dumps(step1[1]) + "\n")
    step0 = (two / "step_0.jsonl").stat().st_mtime_ns
    proc = run_two_ranks(REPO / "recipes" / "infer.py", *args)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "self-revision r(1): 2 to generate, 2 already on disk" in log, log[-3000:]  # rank 0: rows 0 2 | 4 6
    assert "self-revision r(1): 2 to generate, 1 already on disk" in log, log[-3000:]  # rank 1: row 1 | 3 5
    assert "student answers r(0)" not in log and (two / "step_0.jsonl").stat().st_mtime_ns == step0
    for name in ("step_1.jsonl", "answers.jsonl"):
        assert (two / name).read_bytes() == (one / name).read_bytes(), name
    assert not list(two.glob("*.rank*.jsonl"))

    # another model's answers in the folder: refused by rank 0, both ranks exit 2, one error line
    proc = run_two_ranks(REPO / "recipes" / "infer.py", *[a if a != 6 else 5 for a in args])
    message = assert_exit_2_on_both_ranks(proc)
    assert "holds answers of a different run (max_new_tokens: 6 -> 5)" in message


# --------------------------------------------------------------------------------------------------
# recipes/citing.py
# --------------------------------------------------------------------------------------------------


def revision_reply(messages: list[dict]) -> str:
    """A deterministic revision for any request (distinct per request)."""
    digest = hashlib.sha256(messages[-1]["content"].encode()).hexdigest()[:10]
    return f"A clearer and more complete answer, version {digest}, with one concrete example."


def citing_yaml(tmp_path: Path, model_dir: Path, base_url: str, out: Path, **extra) -> Path:
    """The demo recipe cut down: the tiny student, 12 demo rows for SFT, 6 curriculum instructions."""
    cfg = yaml.safe_load((REPO / "recipes" / "configs" / "citing_demo.yaml").read_text())
    cfg.update({
        "model_name_or_path": str(model_dir), "dtype": "float32", "lora_r": 4, "lora_alpha": 8,
        "lora_target_modules": ["q_proj", "v_proj"], "max_samples": 12, "num_instructions": 6,
        "rollout_max_new_tokens": 8, "rollout_batch_size": 2, "rollout_do_sample": True,
        "teacher_backend": "openai", "teacher_base_url": base_url, "teacher_model": "fault-teacher",
        "teacher_max_concurrency": 2, "teacher_max_tokens": 32, "teacher_api_key_env": "CITING_TEST_KEY",
        "output_dir": str(out), "max_length": 512, "per_device_train_batch_size": 2, "learning_rate": 1e-3,
        "logging_steps": 1, "log_level": "info", "seed": 7,
        # the demo trains 1 row x 4 accumulation steps in bf16 to fit its memory target; the cut-down run keeps
        # fp32 and no accumulation, so its global batch is the two ranks' 2 + 2 rows
        "gradient_accumulation_steps": 1, "bf16": False, **extra,
    })
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_citing_two_ranks_kill9_between_rounds_resumes(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    log = tmp_path / "run.log"
    with FaultServer(latency=0.1, reply=revision_reply) as server:
        cfg = citing_yaml(tmp_path, tiny_model_dir, server.base_url, out, num_rounds=2)
        # the teacher check + round 0's 6 revisions are answered; round 1's requests are held, never answered,
        # so the kill below cannot race an answer that was sent but not yet cached
        server.hold_from_now_after(1 + 6)
        t0 = time.time()
        proc = subprocess.Popen(two_ranks(RANK_DIGEST, "--config", cfg), cwd=REPO, env=launcher_env(),
                                stdout=log.open("ab"), stderr=subprocess.STDOUT)
        deadline = time.time() + 600
        while not (out / "round_0" / "summary.json").exists():
            assert proc.poll() is None and time.time() < deadline, log.read_text()[-4000:]
            time.sleep(0.05)
        kill9_all(proc)  # the launcher and both ranks
        first = time.time() - t0
        server.stop_holding()
        assert not (out / "round_1" / "summary.json").exists()
        assert sum(server.successes.values()) == 7

        t1 = time.time()
        proc = subprocess.run(two_ranks(RANK_DIGEST, "--config", cfg), cwd=REPO, env=launcher_env(),
                              capture_output=True, text=True, timeout=600)
        print(f"two-rank CITING: {first:.1f} s to round 0's end, killed; resume {time.time() - t1:.1f} s")
        assert proc.returncode == 0, (log.read_text() + proc.stdout + proc.stderr)[-4000:]
        resumed = proc.stdout + proc.stderr

    # the teacher answered every request once: 1 check + 6 rows x 2 rounds; the resumed run re-asked nothing
    assert sorted(server.successes.values()) == [1] * 13
    assert len(read_jsonl(out / "teacher_cache.jsonl")) == 13
    assert "round 0 already finished; skipping" in resumed and "SFT adapter found" in resumed
    ids = [r["id"] for r in read_jsonl(out / "instructions.jsonl")]
    assert len(ids) == 6
    for k in range(2):
        rdir = out / f"round_{k}"
        shards = [[r["id"] for r in read_jsonl(rdir / f"rollouts.rank{rank}.jsonl")] for rank in (0, 1)]
        assert len(shards[0]) == len(shards[1]) == 3 and not set(shards[0]) & set(shards[1]), shards
        assert sorted(shards[0] + shards[1]) == sorted(ids)  # disjoint and complete
        summary = json.loads((rdir / "summary.json").read_text())
        assert summary["teacher_usage"]["requests_sent"] == 6 and summary["trained_rows"] == 6
        digests = [json.loads((rdir / f"lora_digest.rank{rank}.json").read_text())["digest"] for rank in (0, 1)]
        assert digests[0] == digests[1], f"round {k}: the ranks' LoRA weights differ"
        assert (rdir / "adapter" / "adapter_model.safetensors").is_file()
    # both rounds trained with the global batch of two ranks; one final adapter
    assert "Total train batch size (w. parallel, distributed & accumulation) = 4" in resumed
    assert (out / "final" / "adapter_model.safetensors").is_file()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("final")) == ["final"]
    assert resumed.count("CITING finished") == 1


@pytest.mark.slow
def test_citing_two_ranks_no_usable_revision_exits_2_on_both(tmp_path, tiny_model_dir):
    """The teacher's every revision is empty: rank 0 decides, both ranks exit 2 at once, one error line."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    sft = tmp_path / "sft"  # a fresh adapter stands in for SFT
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                   LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])).save_pretrained(sft)
    out = tmp_path / "run"
    reply = lambda messages: "OK" if "single word OK" in messages[-1]["content"] else ""  # noqa: E731
    with FaultServer(reply=reply) as server:
        cfg = citing_yaml(tmp_path, tiny_model_dir, server.base_url, out, num_rounds=1, sft_adapter=str(sft))
        t0 = time.time()
        proc = run_two_ranks(REPO / "recipes" / "citing.py", "--config", cfg, timeout=300)
        print(f"two-rank CITING error: {time.time() - t0:.1f} s")
    message = assert_exit_2_on_both_ranks(proc)
    assert "round 0: the teacher produced no usable revision {'empty': 6}" in message
    assert "--teacher_model" in message
    assert not (out / "round_0" / "revisions.jsonl").exists()
