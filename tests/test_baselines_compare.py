"""The comparison run wires every method to ONE SFT start and the same test split, and finished stages are skipped."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def compare_module():
    spec = importlib.util.spec_from_file_location("compare", REPO / "baselines" / "compare.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["compare"] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


def flag(cmd, name):
    return cmd[cmd.index(name) + 1]


def test_every_method_starts_from_the_citing_sft_adapter(tmp_path):
    cmp = compare_module()
    a = cmp.CompareArguments(output_dir=str(tmp_path), extra_args=["rrhf=--num_samples 3", "answers=--max_new_tokens 9"])
    cmds = cmp.stage_commands(a)
    sft = str(tmp_path / "citing" / "sft")
    for m in ("sft_more", "ppo", "rrhf", "raft", "dpo"):
        assert flag(cmds[m], "--sft_adapter") == sft
    assert flag(cmds["citing"], "--output_dir") == str(tmp_path / "citing")
    assert cmds["rrhf"][-2:] == ["--num_samples", "3"]  # extra flags come last, so they win over the YAML
    answers = [k for k in cmds if k.startswith("answers_")]
    assert sorted(answers) == sorted(f"answers_{s}" for s in ("sft", "citing", "sft_more", "ppo", "rrhf", "raft", "dpo"))
    for k in answers:
        assert flag(cmds[k], "--dataset_split") == "test" and flag(cmds[k], "--num_revisions") == "0"
        assert cmds[k][-2:] == ["--max_new_tokens", "9"]
    for m in ("citing", "sft_more", "rrhf", "raft", "ppo"):
        assert flag(cmds[m], "--dataset_split") == "train"
    assert flag(cmds["answers_sft"], "--adapter") == sft
    assert flag(cmds["answers_ppo"], "--model_name_or_path") == str(tmp_path / "ppo" / "sft_merged")
    ev = cmds["evaluate"]
    assert flag(ev, "--reference") == "citing" and sum(x.endswith("answers.jsonl") for x in ev) == 7
    assert list(cmds).index("ppo_merge") < list(cmds).index("answers_ppo") < list(cmds).index("evaluate")
    only = cmp.stage_commands(cmp.CompareArguments(output_dir=str(tmp_path), methods=["citing", "dpo"]))
    assert "reward_model" not in only and "ppo" not in only and "answers_dpo" in only and "sft_more" not in only


def test_sft_more_is_a_stage_after_citing_with_its_answers(tmp_path):
    """The compute-matched control trains from citing's SFT adapter on citing's run, after citing, in either order
    of citing and the reward model, and its adapter is answered and evaluated like every other system's."""
    cmp = compare_module()
    assert "sft_more" in cmp.METHODS
    for prefs in ("citing", "choices:x.jsonl"):
        cmds = cmp.stage_commands(cmp.CompareArguments(output_dir=str(tmp_path), rm_preferences=prefs,
                                                       extra_args=["sft_more=--seed 3"]))
        order = list(cmds)
        assert order.index("citing") < order.index("sft_more") < order.index("answers_sft_more") < order.index("evaluate")
        assert "baselines/sft_more.py" in cmds["sft_more"] and cmds["sft_more"][-2:] == ["--seed", "3"]
        assert flag(cmds["sft_more"], "--citing_run") == str(tmp_path / "citing")
        assert flag(cmds["sft_more"], "--output_dir") == flag(cmds["answers_sft_more"], "--adapter") == str(tmp_path / "sft_more")
        assert f"sft_more={tmp_path / 'answers' / 'sft_more' / 'answers.jsonl'}" in cmds["evaluate"]


def test_finished_stage_is_skipped_and_failure_stops(tmp_path, capsys):
    cmp = compare_module()
    a = cmp.CompareArguments(output_dir=str(tmp_path))
    counter = tmp_path / "count"
    cmd = [sys.executable, "-c", f"p='{counter}'; import os; open(p,'a').write('x')"]
    cmp.run_stage("dummy", cmd, a)
    cmp.run_stage("dummy", cmd, a)
    assert counter.read_text() == "x" and "skipped" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="stage broken failed"):
        cmp.run_stage("broken", [sys.executable, "-c", "raise SystemExit(3)"], a)
    assert not (tmp_path / ".stages" / "broken.done").exists()


def test_judge_settings_are_the_evaluate_stage_flags(tmp_path):
    """compare.py declares no judge field of its own: gold only by default, a judge through evaluate's flags."""
    cmp = compare_module()
    cmds = cmp.stage_commands(cmp.CompareArguments(output_dir=str(tmp_path)))
    assert cmds["evaluate"][cmds["evaluate"].index("--judge_backend") + 1] == "none"
    chosen = cmp.stage_commands(cmp.CompareArguments(output_dir=str(tmp_path),
                                                     extra_args=["evaluate=--judge_backend local"]))["evaluate"]
    positions = [i for i, flag in enumerate(chosen) if flag == "--judge_backend"]
    assert [chosen[i + 1] for i in positions] == ["none", "local"]  # the stage's own flag comes last and wins


def test_gold_reward_test_caps_and_citing_self_revision(tmp_path):
    """reward gold: no reward model read (nor trained unless asked); --test_per_source re-caps only the test
    split of the same spec; CITING answers with its self-revision steps, the others once."""
    cmp = compare_module()
    spec = "boolq:b.jsonl@30+squad_v2:s.json%55@30"
    a = cmp.CompareArguments(output_dir=str(tmp_path), dataset=spec, reward="gold", test_per_source=100,
                             citing_revisions=2)
    cmds = cmp.stage_commands(a)
    assert "reward_model" not in cmds
    for m in ("ppo", "rrhf", "raft"):
        assert flag(cmds[m], "--reward") == "gold"
        assert flag(cmds[m], "--reward_model_path" if m == "ppo" else "--reward_model") == ""  # clears the YAML's
        assert flag(cmds[m], "--dataset") == spec
    assert flag(cmds["answers_sft"], "--dataset") == "boolq:b.jsonl@100+squad_v2:s.json%55@100"
    assert flag(cmds["answers_citing"], "--num_revisions") == "2"
    assert flag(cmds["answers_citing"], "--rubric_path") == str(tmp_path / "citing" / "rubric.json")
    assert flag(cmds["answers_raft"], "--num_revisions") == "0"
    kept = cmp.stage_commands(cmp.CompareArguments(output_dir=str(tmp_path), reward="gold", train_reward_model=True))
    assert "reward_model" in kept and flag(kept["raft"], "--reward_model") == ""
    model = cmp.stage_commands(cmp.CompareArguments(output_dir=str(tmp_path), reward="model"))
    assert flag(model["raft"], "--reward") == "model" and flag(model["raft"], "--reward_model") == str(tmp_path / "reward_model")
    assert flag(model["ppo"], "--reward_model_path") == str(tmp_path / "reward_model")


def test_compare_ifeval_config_answers_with_the_untuned_backbone_too(tmp_path):
    """compare_ifeval.yaml: every method plus the untuned backbone (no adapter), 400 held-out ifeval prompts."""
    from trl import TrlParser

    cmp = compare_module()
    (a,) = TrlParser((cmp.CompareArguments,)).parse_args_and_config(
        ["--config", str(REPO / "baselines" / "configs" / "compare_ifeval.yaml"), "--output_dir", str(tmp_path)])
    cmds = cmp.stage_commands(a)
    assert "--adapter" not in cmds["answers_untuned"] and flag(cmds["answers_sft"], "--adapter").endswith("sft")
    assert flag(cmds["answers_untuned"], "--dataset") == "ifeval:../shared/data/alpaca_4k.json"
    assert flag(cmds["answers_untuned"], "--max_samples") == "400" and a.test_samples >= 300
    assert {f"answers_{m}" for m in ("untuned", "sft", "citing", "sft_more", "ppo", "rrhf", "raft", "dpo")} <= set(cmds)
