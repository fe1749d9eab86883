"""One comparison run (paper §4.3, Table 1): CITING, PPO-RLHF, RRHF, RAFT and DPO from ONE SFT start, on QA data
with gold answers, answered on a held-out split by the same generator and scored by recipes/evaluate.py.

    python baselines/compare.py --config baselines/configs/compare_qa.yaml              # everything (make compare)
    python baselines/compare.py --config baselines/configs/compare_qa.yaml --stages rrhf,raft
    python baselines/compare.py --config baselines/configs/compare_qa.yaml --list_stages  # stages and their state

Stages, each a subprocess that writes under <output_dir>/<stage> and is skipped on a rerun once finished (a
``.done`` marker with its wall time is written after it exits 0, by :func:`citing_trl.stages.run_stage`; an
interrupted stage resumes through its own script's resume logic):

    citing        recipes/citing.py: SFT (Algorithm 1 lines 2-4) -> the shared start citing/sft, then N rounds
    sft_more      baselines/sft_more.py: the compute-matched control, citing/sft trained on the gold answers of the
                  rows citing's rounds trained on, for as many optimizer steps (steps and tokens in its stats.json)
    reward_model  baselines/reward_model.py (pairs: ``rm_preferences``; held-out pair accuracy in eval_metrics.json)
    ppo rrhf raft dpo   baselines/*.py, every one from citing/sft (DPO on citing's revision ≻ answer pairs)
    answers_<m>   recipes/infer.py --num_revisions 0 on the test split, for sft, citing and each baseline
    evaluate      recipes/evaluate.py: gold metrics + Table 1 with CITING as reference

Training and answering stages start under ``accelerate launch`` when ``--accelerate_config FILE`` and/or
``--num_processes N`` are given (e.g. ``--accelerate_config accelerate_configs/multi_gpu.yaml --num_processes 8``);
with neither, each starts as one ``python`` process. ``ppo_merge`` and ``evaluate`` always run as one process.

With ``--lock FILE`` stages run only while this process holds ``flock FILE`` (the shared-machine rule); after a
stage the lock is given back once it has been held ``lock_hold_s`` seconds, so short stages share one hold.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from trl import TrlParser

from citing_trl import stages
from citing_trl.baselines.compare_table import compare_table
from citing_trl.cli import run_main
from citing_trl.data.spec import with_part_cap
from citing_trl.errors import check, check_choice
from citing_trl.models import load_student_tokenizer, resolve_model_path

REPO = Path(__file__).resolve().parents[1]
TRAINED = ("citing", "sft_more", "ppo", "rrhf", "raft", "dpo")
METHODS = (*TRAINED, "untuned")  # untuned (not by default): the backbone itself answers the test rows


@dataclass
class CompareArguments:
    output_dir: str = field(default="outputs/compare_demo", metadata={"help": "Root folder of every stage."})
    model_name_or_path: str = field(default="HuggingFaceTB/SmolLM2-135M-Instruct", metadata={"help": "Backbone."})
    dataset: str = field(
        default="commonsense_qa:../shared/data/commonsenseqa_dev.jsonl",
        metadata={"help": "QA data with gold answers (a load_instructions spec; its seeded train/test splits never "
                          "overlap). Training uses split 'train', answers use 'test'."},
    )
    train_samples: int = field(default=48, metadata={"help": "Training prompts for SFT and every method."})
    test_samples: int = field(default=60, metadata={"help": "Held-out rows every system answers."})
    test_per_source: int | None = field(
        default=None,
        metadata={"help": "Held-out rows per source of `dataset` (each part's '@N' cap is replaced by this one for the "
                          "test split only; its splits are unchanged, so test rows never overlap training)."},
    )
    citing_revisions: int = field(
        default=0,
        metadata={"help": "Self-revision steps CITING takes when answering (Algorithm 1 line 14); every step r(0)..r(M) "
                          "is scored, with fix/break between steps. The other systems answer once."},
    )
    reward: str = field(
        default="model",
        metadata={"help": "The reward RAFT, RRHF and PPO optimise: 'model' (the trained reward model) or 'gold' (the "
                          "verifiable gold reward, the signal CITING's gold gate reads)."},
    )
    train_reward_model: bool = field(
        default=False,
        metadata={"help": "With reward 'gold': still train the reward model, to report its held-out pair accuracy."},
    )
    rm_preferences: str = field(
        default="choices:commonsense_qa:../shared/data/commonsenseqa_dev.jsonl",
        metadata={"help": "Reward-model pairs (--preferences of baselines/reward_model.py); 'citing' = the CITING "
                          "run's revision ≻ answer pairs."},
    )
    methods: list[str] = field(default_factory=lambda: list(TRAINED),
                               metadata={"help": "Systems to train (and 'untuned': the backbone answers too)."})
    citing_config: str = field(default="recipes/configs/citing_demo.yaml", metadata={"help": "CITING YAML."})
    reward_model_config: str = field(default="baselines/configs/reward_model_demo.yaml", metadata={"help": "RM YAML."})
    ppo_config: str = field(default="baselines/configs/ppo_demo.yaml", metadata={"help": "PPO-RLHF YAML."})
    rrhf_config: str = field(default="baselines/configs/rrhf_demo.yaml", metadata={"help": "RRHF YAML."})
    raft_config: str = field(default="baselines/configs/raft_demo.yaml", metadata={"help": "RAFT YAML."})
    dpo_config: str = field(default="baselines/configs/dpo_demo.yaml", metadata={"help": "DPO YAML."})
    sft_more_config: str = field(default="baselines/configs/sft_more_demo.yaml",
                                 metadata={"help": "sft_more YAML (the compute-matched control)."})
    infer_config: str = field(default="recipes/configs/infer/demo.yaml", metadata={"help": "Answering YAML."})
    extra_args: list[str] = field(
        default_factory=list,
        metadata={"help": "Per-stage flags as 'STAGE=--flag value ...' (STAGE: citing, reward_model, ppo, rrhf, raft, "
                          "dpo, answers, evaluate); they override the stage's YAML."},
    )
    accelerate_config: str | None = field(
        default=None,
        metadata={"help": "An accelerate config file (e.g. accelerate_configs/multi_gpu.yaml, relative to the repository "
                          "root) every training and answering stage is launched with (`accelerate launch --config_file`). "
                          "Unset, with --num_processes unset too: each stage is one plain python process."},
    )
    num_processes: int | None = field(
        default=None,
        metadata={"help": "Processes per training and answering stage (`accelerate launch --num_processes`); overrides "
                          "the config file's num_processes. Without --accelerate_config, more than 1 launches "
                          "data-parallel ranks (--multi_gpu; gloo ranks on a machine without GPUs)."},
    )
    launcher: str = field(
        default="python",
        metadata={"help": "Replaced by --accelerate_config and --num_processes; only 'python' (the default, which "
                          "changes nothing) is still accepted, so older YAMLs that set it keep working."},
    )
    lock: str | None = field(
        default=None,
        metadata={"help": "A lock file (shared machine): stages run only while this process holds it (flock)."},
    )
    lock_hold_s: float = field(
        default=300.0,
        metadata={"help": "With --lock: after a stage ends, give the lock back if it was held this long, so others "
                          "get a turn; consecutive short stages share one hold."},
    )
    stages: str | None = field(default=None, metadata={"help": "Comma-separated stages to run (default: all)."})
    list_stages: bool = field(default=False, metadata={"help": "Print the stages and whether each is done, then exit."})
    stage_timeout: int | None = field(default=None, metadata={"help": "Seconds before a stage is stopped (resumable)."})


def launch_prefix(a: CompareArguments) -> list[str]:
    """How a training or answering stage's script starts: plain python, or ``accelerate launch`` with the
    ``--accelerate_config`` file and/or ``--num_processes``."""
    check(a.launcher == "python", "launcher", "is replaced by --accelerate_config FILE and --num_processes N (only "
          "'python' is still accepted)", a.launcher)
    if a.num_processes is not None:
        check(a.num_processes >= 1, "num_processes", "must be at least 1", a.num_processes)
    if a.accelerate_config:
        path = Path(a.accelerate_config)
        check((path if path.is_absolute() else REPO / path).is_file(), "accelerate_config",
              "must be an existing accelerate config file (relative paths start at the repository root)",
              a.accelerate_config)
    if not a.accelerate_config and a.num_processes is None:
        return [sys.executable]
    launch = [sys.executable, "-m", "accelerate.commands.launch"]
    if a.accelerate_config:
        launch += ["--config_file", a.accelerate_config]
    elif a.num_processes > 1:
        launch += ["--multi_gpu"]  # without a config file accelerate would start one process for a CPU machine
    if a.num_processes is not None:
        launch += ["--num_processes", str(a.num_processes)]
    return launch


def stage_commands(a: CompareArguments) -> dict[str, list[str]]:
    out = Path(a.output_dir)
    py, launch = [sys.executable], launch_prefix(a)
    extra = {}
    for item in a.extra_args:
        stage, _, flags = item.partition("=")
        extra.setdefault(stage.strip(), []).extend(shlex.split(flags))
    model = ["--model_name_or_path", a.model_name_or_path]
    train_data = ["--dataset", a.dataset, "--dataset_split", "train", "--max_samples", str(a.train_samples)]
    sft = str(out / "citing" / "sft")
    rm = str(out / "reward_model")
    rm_prefs = str(out / "citing") if a.rm_preferences == "citing" else a.rm_preferences
    # the reward RAFT, RRHF and PPO optimise: the trained reward model, or the gold reward (no model read)
    # (with gold, an empty --reward_model clears a path the method's YAML may set: the two would contradict)
    rm_flag = {m: ["--reward", a.reward, "--reward_model_path" if m == "ppo" else "--reward_model",
                   rm if a.reward == "model" else ""] for m in ("ppo", "rrhf", "raft")}
    cmds: dict[str, list[str]] = {
        "reward_model": [*launch, "baselines/reward_model.py", "--config", a.reward_model_config, *model,
                         "--preferences", rm_prefs, "--output_dir", rm, *extra.get("reward_model", [])],
        "citing": [*launch, "recipes/citing.py", "--config", a.citing_config, *model, *train_data,
                   "--num_instructions", str(a.train_samples), "--output_dir", str(out / "citing"), *extra.get("citing", [])],
        # the compute-matched control: SFT on the gold answers of citing's trained rows, for citing's optimizer steps
        "sft_more": [*launch, "baselines/sft_more.py", "--config", a.sft_more_config, *model, *train_data,
                     "--sft_adapter", sft, "--citing_run", str(out / "citing"), "--output_dir", str(out / "sft_more"),
                     *extra.get("sft_more", [])],
        "ppo": [*launch, "baselines/ppo_rlhf.py", "--config", a.ppo_config, *model, *train_data, "--sft_adapter", sft,
                *rm_flag["ppo"], "--output_dir", str(out / "ppo"), *extra.get("ppo", [])],
        "rrhf": [*launch, "baselines/rrhf.py", "--config", a.rrhf_config, *model, *train_data, "--sft_adapter", sft,
                 *rm_flag["rrhf"], "--citing_run", str(out / "citing"), "--output_dir", str(out / "rrhf"),
                 *extra.get("rrhf", [])],
        "raft": [*launch, "baselines/raft.py", "--config", a.raft_config, *model, *train_data, "--sft_adapter", sft,
                 *rm_flag["raft"], "--output_dir", str(out / "raft"), *extra.get("raft", [])],
        "dpo": [*launch, "baselines/dpo.py", "--config", a.dpo_config, *model, "--sft_adapter", sft,
                "--preferences", str(out / "citing"), "--output_dir", str(out / "dpo"), *extra.get("dpo", [])],
    }
    if a.rm_preferences == "citing":  # the reward model then learns from the CITING run: train it after CITING
        cmds = {"citing": cmds.pop("citing"), **cmds}
    cmds = {k: v for k, v in cmds.items() if k in ("citing", "reward_model") or k in a.methods}
    if not any(m in a.methods for m in ("ppo", "rrhf", "raft")) or (a.reward == "gold" and not a.train_reward_model):
        cmds.pop("reward_model")
    test_spec = with_part_cap(a.dataset, a.test_per_source) if a.test_per_source else a.dataset
    test = ["--dataset", test_spec, "--dataset_split", "test", "--max_samples", str(a.test_samples)]
    systems = {"sft": (a.model_name_or_path, sft), "citing": (a.model_name_or_path, str(out / "citing" / "final"))}
    if "untuned" in a.methods:
        systems = {"untuned": (a.model_name_or_path, None), **systems}
    for m in ("sft_more", "rrhf", "raft", "dpo"):
        if m in a.methods:
            systems[m] = (a.model_name_or_path, str(out / m))
    if "ppo" in a.methods:  # the PPO adapter sits on the SFT-merged backbone (see citing_trl.baselines.ppo)
        systems["ppo"] = (str(out / "ppo" / "sft_merged"), str(out / "ppo" / "adapter"))
        cmds["ppo_merge"] = [*py, str(Path(__file__).resolve()), "--merge_sft", a.model_name_or_path, sft,
                             str(out / "ppo" / "sft_merged")]
    for name, (base, adapter) in systems.items():
        revise = (["--num_revisions", str(a.citing_revisions), "--rubric_path", str(out / "citing" / "rubric.json")]
                  if name == "citing" and a.citing_revisions else ["--num_revisions", "0"])
        cmds[f"answers_{name}"] = [*launch, "recipes/infer.py", "--config", a.infer_config, "--model_name_or_path", base,
                                   *(["--adapter", adapter] if adapter else []), *test, *revise,
                                   "--output_dir", str(out / "answers" / name), *extra.get("answers", [])]
    answers = [f"{n}={out / 'answers' / n / 'answers.jsonl'}" for n in systems]
    # gold metrics only unless the evaluate stage's flags choose a judge ("evaluate=--judge_backend local ..."):
    # the judge's settings are recipes/evaluate.py's own --judge_* flags, not declared again here
    judge = ["--judge_backend", "none"]
    cmds["evaluate"] = [*py, "recipes/evaluate.py", "--answers", *answers, "--reference", "citing", *judge,
                        "--output_dir", str(out / "eval"), *extra.get("evaluate", [])]
    return cmds


def merge_sft(base: str, adapter: str, target: str) -> None:
    """Save base + SFT adapter merged (the backbone PPO's adapter applies to), once."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM


    if (Path(target) / "config.json").is_file():
        return
    path = resolve_model_path(base)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(path), adapter).merge_and_unload()
    tmp = Path(target + ".tmp")
    model.save_pretrained(tmp)
    load_student_tokenizer(path, adapter).save_pretrained(tmp)
    tmp.rename(target)


class Lock:
    """flock(2) on a shared lock file, held across consecutive stages for at most ``hold_s`` of stage time."""

    def __init__(self, path: str | None, hold_s: float):
        self.path, self.hold_s, self.fd, self.since = path, hold_s, None, 0.0

    def acquire(self):
        if self.path and self.fd is None:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            print(f"[compare] waiting for {self.path}", flush=True)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            self.since = time.time()

    def maybe_release(self, force: bool = False):
        if self.fd is not None and (force or time.time() - self.since >= self.hold_s):
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def stage_marker(a: CompareArguments, name: str) -> Path:
    return Path(a.output_dir) / ".stages" / f"{name}.done"


def run_stage(name: str, cmd: list[str], a: CompareArguments, lock: Lock | None = None) -> float:
    """Run one stage's command unless its marker says it finished (citing_trl.stages); returns its wall time."""

    def work() -> dict:
        if lock:
            lock.acquire()
        print(f"[compare] {name}: {shlex.join(cmd)}", flush=True)
        t0 = time.time()
        try:
            code = subprocess.run(cmd, cwd=REPO, timeout=a.stage_timeout).returncode
        except subprocess.TimeoutExpired:
            sys.exit(f"compare: stage {name} ran past --stage_timeout {a.stage_timeout}s; rerun to resume it")
        wall = time.time() - t0
        if lock:
            lock.maybe_release(force=code != 0)
        if code != 0:
            sys.exit(f"compare: stage {name} failed (exit {code}); fix it and rerun (finished stages are skipped)")
        return {"wall_s": round(wall, 1)}

    result = stages.run_stage(stage_marker(a, name), work, name=name)
    if not result.ran:
        print(f"[compare] {name}: done before ({json.dumps(result.record)}), skipped")
        return 0.0
    return result.record["wall_s"]


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--merge_sft":
        merge_sft(*sys.argv[2:])
        return
    (a,) = TrlParser((CompareArguments,)).parse_args_and_config()
    check_choice("reward", a.reward, ("model", "gold"))
    check(a.citing_revisions >= 0, "citing_revisions", "must be >= 0", a.citing_revisions)
    unknown = sorted(set(a.methods) - set(METHODS))
    check(not unknown, "methods", f"must be some of {', '.join(METHODS)}; unknown", unknown)
    cmds = stage_commands(a)
    wanted = list(cmds) if not a.stages else [s.strip() for s in a.stages.split(",") if s.strip()]
    bad = [s for s in wanted if s not in cmds]
    check(not bad, "stages", f"must be some of {', '.join(cmds)}; unknown", bad)
    if a.list_stages:
        for s in cmds:
            marker = stage_marker(a, s)
            print(f"{s:20s} {'done ' + json.dumps(stages.read_marker(marker)) if stages.is_done(marker) else 'to do'}")
        return
    lock = Lock(a.lock, a.lock_hold_s)
    for s in wanted:
        run_stage(s, cmds[s], a, lock)
    lock.maybe_release(force=True)
    table = Path(a.output_dir) / "eval"
    if stages.is_done(stage_marker(a, "evaluate")):
        systems = [*(["untuned"] if "untuned" in a.methods else []), "sft",
                   *[m for m in TRAINED if m in a.methods and m != "citing"], "citing"]
        text = compare_table(a.output_dir, systems)
        (table / "compare_table.md").write_text(text + "\n")
        print(f"[compare] reports in {table}\n\n{text}")


if __name__ == "__main__":
    run_main(main)  # a user error (bad flag) prints one line, exit 2; a failed stage exits with its own line
