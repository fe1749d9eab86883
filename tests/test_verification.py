"""Verified revisions (issue 13): keeping right answers, the revision gate, best-of-K teacher samples and the
fix/break report. The end-to-end test runs one CITING round on the tiny model with the oracle teacher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_citing_parts

from citing_trl.jsonl import append_jsonl, read_jsonl
from citing_trl.pipeline import CitingArguments, CitingPipeline
from citing_trl.sft import DataArguments
from tests.helpers.oracle_server import oracle_server

QA_ROWS = [
    {"instruction": "Answer the following question: which planet is called the red planet?", "output": "Mars"},
    {"instruction": "Answer the following question: what is the capital of France?", "output": "Paris"},
    {"instruction": "Answer the following question: how many legs does a spider have?", "output": "eight"},
    {"instruction": "Answer the following question: what gas do plants take in?", "output": "carbon dioxide"},
    {"instruction": "Answer the following question: who wrote Hamlet?", "output": "William Shakespeare"},
    {"instruction": "Answer the following question: what is frozen water called?", "output": "ice"},
]


def qa_file(tmp_path: Path) -> Path:
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps({**r, "source": "nq_open", "answers": [r["output"]]}) + "\n" for r in QA_ROWS))
    return path


def oracle_parts(tmp_path: Path, model_dir: Path, base_url: str, **citing_overrides):
    return tiny_citing_parts(
        tmp_path, model_dir, DataArguments(dataset=str(qa_file(tmp_path)), max_samples=None), num_rounds=1,
        num_instructions=len(QA_ROWS), rollout_max_new_tokens=8, teacher_backend="openai", teacher_model="oracle",
        teacher_base_url=base_url, teacher_max_tokens=32, **citing_overrides,
    )


def run_oracle_round(tmp_path: Path, model_dir: Path, **citing_overrides):
    """Round 0 with drafts written in advance (the pipeline resumes from rollouts on disk): every other
    draft is the gold answer, the rest are wrong. Returns (round dir, {id: draft}, {id: gold})."""
    with oracle_server(QA_ROWS) as server:
        pipe = CitingPipeline(*oracle_parts(tmp_path, model_dir, server.base_url, **citing_overrides))
        pipe.sft()
        rows = pipe.matched_instructions(pipe.rubric())
        gold = {r["id"]: r["output"] for r in rows}
        drafts = {r["id"]: (r["output"] if i % 2 == 0 else "I am not sure.") for i, r in enumerate(rows)}
        rdir = tmp_path / "run" / "round_0"
        rdir.mkdir(parents=True)
        append_jsonl(rdir / "rollouts.jsonl", [
            {"id": i, "response": d, "finish_reason": "stop", "completion_tokens": 3} for i, d in drafts.items()
        ])
        pipe.run()
    run_oracle_round.last_server = server
    return rdir, drafts, gold


@pytest.fixture(scope="module")
def oracle_round(tmp_path_factory, tiny_model_dir):
    return run_oracle_round(tmp_path_factory.mktemp("oracle"), tiny_model_dir, revision_gate="gold",
                            revision_reference=True)


def test_right_draft_kept_by_teacher_becomes_training_row(oracle_round):
    rdir, drafts, gold = oracle_round
    right = {i for i, d in drafts.items() if d == gold[i]}
    trained = {r["id"]: r for r in read_jsonl(rdir / "revisions.jsonl")}
    assert right and set(trained) == set(drafts), "every oracle revision (kept right answers too) is trained on"
    assert all(trained[i]["revision"] == trained[i]["response"] == gold[i] for i in right)
    counts = json.loads((rdir / "revision_counts.json").read_text())
    assert counts == {"kept_identical": len(right), "accepted": len(drafts) - len(right)}
    summary = json.loads((rdir / "summary.json").read_text())
    assert summary["trained_rows"] == len(drafts)
    assert (rdir / "adapter" / "adapter_config.json").exists()
    # the fix/break table counts the kept right answers as right->right, the fixed ones as wrong->right
    fb = summary["verification"]["fix_break"]
    expected = {"wrong_to_right": len(drafts) - len(right), "right_to_wrong": 0, "right_to_right": len(right),
                "wrong_to_wrong": 0, "no_gold": 0}
    assert fb["kept"] == fb["proposed"] == expected
    assert summary["verification"]["revision_gate"] == "gold"
    usage = summary["teacher_usage"]
    assert usage["kept_rows"] == len(drafts) and usage["requests_per_kept_row"] == 1.0
    tokens = usage["prompt_tokens"] + usage["completion_tokens"]
    assert tokens > 0 and usage["tokens_per_kept_row"] == pytest.approx(tokens / len(drafts), abs=0.05)
    card = (rdir / "adapter" / "README.md").read_text()
    assert "Revision gate: `gold`" in card and f"right→right {len(right)}" in card
    # the gold answer reaches the teacher's prompt (reference-guided) and the gate, never the student's prompt
    teacher_prompts = [m[-1]["content"] for m in run_oracle_round.last_server.messages_by_key.values()]
    wrong = [i for i in drafts if i not in right]
    assert all(any(gold[i] in p and drafts[i] in p for p in teacher_prompts) for i in wrong)
    from citing_trl.citing_trainer import revision_to_prompt_completion

    for rec in read_jsonl(rdir / "revisions.jsonl"):
        if rec["response"] != gold[rec["id"]]:
            example = revision_to_prompt_completion(rec)
            assert gold[rec["id"]] not in json.dumps(example["prompt"])
            assert example["completion"][0]["content"] == gold[rec["id"]]


def test_keep_identical_off_drops_right_drafts(tmp_path, tiny_model_dir):
    rdir, drafts, gold = run_oracle_round(tmp_path, tiny_model_dir, keep_identical=False)
    right = {i for i, d in drafts.items() if d == gold[i]}
    counts = json.loads((rdir / "revision_counts.json").read_text())
    assert counts == {"identical": len(right), "accepted": len(drafts) - len(right)}
    assert {r["id"] for r in read_jsonl(rdir / "rejected.jsonl")} == right


# --------------------------------------------------------------------------------------------------
# Gates on constructed cases
# --------------------------------------------------------------------------------------------------

from citing_trl.teacher import Completion  # noqa: E402
from citing_trl.verification import JudgeGate, RevisionSettings, RewardGate, select_revisions  # noqa: E402
from tests.testing_utils import gold_gate  # noqa: E402

CRITERIA = "- Answer the question."


def row(rid: str, source: str = "nq_open", answers=("Paris",), instruction: str = "What is the capital of France?"):
    return {"id": rid, "instruction": instruction, "input": "", "criteria": CRITERIA, "category": "qa",
            "source": source, "answers": list(answers)}


def done(*texts: str) -> list[Completion]:
    return [Completion(t, "stop", 10, 5) for t in texts]


def test_gold_gate_keeps_exactly_right_and_not_worse():
    rows = [row("wrong"), row("right"), row("worse"), row("nogold", source="alpaca", answers=("a poem",)),
            row("kept-right"), row("kept-wrong")]
    responses = {"wrong": "London", "right": "London", "worse": "Paris", "nogold": "roses are red",
                 "kept-right": "Paris", "kept-wrong": "Rome"}
    samples = [done("Rome"), done("It is Paris."), done("Paris, which is a large city in the north of France"),
               done("violets are blue"), done("Paris"), done("Rome")]
    accepted, rejected, counts, report = select_revisions(rows, responses, samples, gold_gate)
    assert {a["id"] for a in accepted} == {"right", "nogold", "kept-right"}
    assert {r["id"]: r["reason"] for r in rejected} == {"wrong": "gate_wrong", "worse": "gate_worse",
                                                        "kept-wrong": "gate_wrong"}
    assert counts == {"accepted": 2, "kept_identical": 1, "gate_wrong": 2, "gate_worse": 1}
    assert report["ungated"] == 1  # the row without gold passed unchecked, counted
    assert all("answers" not in a and "Paris" not in a["instruction"] for a in accepted)
    assert next(r for r in rejected if r["id"] == "wrong")["verdict"]["gold_revision"][0] == 0.0


def test_gold_gate_multiple_choice_uses_accuracy():
    mc = row("mc", source="commonsense_qa", answers=("B. pizza", "pizza"), instruction="Which food is round?")
    mc["input"] = "A. bread\nB. pizza\nC. rice"
    accepted, rejected, counts, _ = select_revisions([mc], {"mc": "A. bread"}, [done("B. pizza")], gold_gate)
    assert counts == {"accepted": 1}
    accepted, rejected, counts, _ = select_revisions([mc], {"mc": "B. pizza"}, [done("C. rice")], gold_gate)
    assert counts == {"gate_wrong": 1}


class FakeJudge:
    """Stands in for the pairwise judge: a verdict per revision text, as after the both-orders rule (a flip
    between the orders is already a tie)."""

    def __init__(self, verdicts: dict[str, dict]):
        self.verdicts, self.items = verdicts, []

    def compare(self, items):
        self.items += items
        return [self.verdicts[it["a"]] for it in items]


def test_judge_gate_keeps_only_consistent_wins():
    rows = [row("win"), row("flip"), row("loss"), row("split"), row("same")]
    responses = {r["id"]: "draft " + r["id"] for r in rows}
    responses["same"] = "Paris"
    aspects = ("articulate", "in-depth", "comprehensive")
    judge = FakeJudge({
        "better": dict.fromkeys(aspects, "a"),
        "flipped": dict.fromkeys(aspects, "tie"),
        "worse": dict.fromkeys(aspects, "b"),
        "mixed": {"articulate": "a", "in-depth": "b", "comprehensive": "tie"},
    })
    samples = [done("better"), done("flipped"), done("worse"), done("mixed"), done("Paris")]
    accepted, rejected, counts, _ = select_revisions(rows, responses, samples, JudgeGate(judge))
    assert {a["id"] for a in accepted} == {"win", "same"}
    assert counts == {"accepted": 1, "kept_identical": 1, "gate_not_better": 3}
    assert [it["a"] for it in judge.items] == ["better", "flipped", "worse", "mixed"]  # identical: not asked
    assert all(it["b"] == responses[r["id"]] for it, r in zip(judge.items, rows))


class FakeScorer:
    def __init__(self, scores: dict[str, float]):
        self.scores, self.prompts = scores, []

    def score(self, prompts, completions):
        self.prompts += prompts
        return [self.scores[c] for c in completions]


def test_reward_gate_margin():
    rows = [row("big"), row("small"), row("down")]
    responses = {"big": "d1", "small": "d2", "down": "d3"}
    scorer = FakeScorer({"d1": 0.0, "d2": 0.0, "d3": 1.0, "r1": 1.0, "r2": 0.3, "r3": 0.0})
    samples = [done("r1"), done("r2"), done("r3")]
    accepted, rejected, counts, _ = select_revisions(rows, responses, samples, RewardGate(scorer, margin=0.5))
    assert [a["id"] for a in accepted] == ["big"]
    assert counts == {"accepted": 1, "gate_not_better": 2}
    assert next(r for r in rejected if r["id"] == "small")["verdict"]["reward_revision"] == 0.3
    _, _, counts, _ = select_revisions(rows, responses, samples, RewardGate(scorer, margin=0.2))
    assert counts == {"accepted": 2, "gate_not_better": 1}
    assert scorer.prompts[0] == [{"role": "user", "content": rows[0]["instruction"]}]


def test_best_of_k_keeps_best_passing_sample():
    rows = [row("a"), row("b"), row("c")]
    responses = {"a": "London", "b": "London", "c": "London"}
    samples = [
        done("Rome", "The capital city of France is Paris, on the Seine", "Paris", "Paris."),  # best F1, then shorter
        done("Berlin", "", "Madrid"),  # nothing passes: reason of the first gated sample
        done("", "Paris is it", "It is Paris"),  # same gold score: the shorter... equal length: the earlier
    ]
    accepted, rejected, counts, _ = select_revisions(rows, responses, samples, gold_gate)
    kept = {a["id"]: (a["revision"], a["sample"]) for a in accepted}
    assert kept == {"a": ("Paris", 2), "c": ("Paris is it", 1)}
    assert rejected[0]["reason"] == "gate_wrong"
    assert [s["reason"] for s in rejected[0]["samples"]] == ["gate_wrong", "empty", "gate_wrong"]
    # judge scores rank samples when there is no gold gate
    judge = FakeJudge({"x": {"j": "a"}, "yy": {"j": "a", "k": "a"}, "z": {"j": "b"}})
    accepted, _, _, _ = select_revisions([row("d")], {"d": "draft"}, [done("x", "yy", "z")], JudgeGate(judge))
    assert accepted[0]["revision"] == "yy"


def test_fix_break_arithmetic_on_hand_built_rows():
    rows = [row(f"r{i}") for i in range(5)] + [row("open", source="alpaca", answers=("x",))]
    responses = {"r0": "London", "r1": "Paris", "r2": "Paris", "r3": "Rome", "r4": "Paris", "open": "x"}
    samples = [done("Paris"), done("Berlin"), done("It is Paris"), done("Oslo"), done("Paris"), done("y")]
    _, _, counts, report = select_revisions(rows, responses, samples, None)
    proposed = {"wrong_to_right": 1, "right_to_wrong": 1, "right_to_right": 2, "wrong_to_wrong": 1, "no_gold": 1}
    assert report["fix_break"]["proposed"] == proposed == report["fix_break"]["kept"]
    assert counts == {"accepted": 5, "kept_identical": 1}
    _, _, counts, report = select_revisions(rows, responses, samples, gold_gate)
    assert report["fix_break"]["proposed"] == proposed  # before the gate: unchanged
    assert report["fix_break"]["kept"] == {"wrong_to_right": 1, "right_to_wrong": 0, "right_to_right": 1,
                                           "wrong_to_wrong": 0, "no_gold": 1}
    assert counts == {"accepted": 2, "kept_identical": 1, "gate_wrong": 2, "gate_worse": 1}


def test_bad_gate_settings_fail_at_parse_time():
    from citing_trl.citing_config import TeacherArguments, check_teacher_sampling
    from citing_trl.errors import ConfigError

    with pytest.raises(ConfigError, match="--revision_gate must be one of none, gold, judge, reward, got 'oracle'"):
        CitingArguments(revision_gate="oracle")
    with pytest.raises(ConfigError, match="--gate_reward_model is needed"):
        CitingArguments(revision_gate="reward")
    with pytest.raises(ConfigError, match="--teacher_temperature must be > 0 with --teacher_num_samples 4"):
        check_teacher_sampling(CitingArguments(teacher_num_samples=4), TeacherArguments().build())
    with pytest.raises(ConfigError, match="--teacher_num_samples must be a whole number"):
        CitingArguments(teacher_num_samples=0)


# --------------------------------------------------------------------------------------------------
# The real judge (C2) and the real multi-sample teacher (C4) against a scripted server
# --------------------------------------------------------------------------------------------------

import re  # noqa: E402
import threading  # noqa: E402

from citing_trl.revision import teacher_revisions  # noqa: E402
from citing_trl.teacher import Teacher, TeacherConfig  # noqa: E402
from citing_trl.verification import make_gate  # noqa: E402
from tests.helpers.fault_server import FaultServer  # noqa: E402

_ANSWERS = re.compile(r"### Answer A\n(.*?)\n\n### Answer B\n(.*?)\n\n", re.S)


def judge_reply(messages):
    """A judge with a fixed taste per task: 'win' tasks prefer the answer marked GOOD in either position,
    'loss' tasks prefer the unmarked one, 'flip' tasks always say A (pure position bias)."""
    text = messages[-1]["content"]
    a, b = _ANSWERS.search(text).groups()
    if "flip" in text:
        return "A"
    wanted = "GOOD" if "win" in text else "plain"
    return "A" if wanted in a else "B"


def openai_teacher(server, cache: Path, **kw) -> Teacher:
    return Teacher(TeacherConfig(backend="openai", model="scripted", base_url=server.base_url, max_retries=0, **kw),
                   cache_path=cache)


def test_judge_gate_with_pairwise_judge_both_orders(tmp_path):
    rows = [row("w", instruction="Task win"), row("f", instruction="Task flip"), row("l", instruction="Task loss")]
    responses = {r["id"]: "plain draft " + r["id"] for r in rows}
    samples = [done("GOOD revision " + r["id"]) for r in rows]
    with FaultServer(reply=judge_reply) as server:
        teacher = openai_teacher(server, tmp_path / "cache.jsonl")
        gate = make_gate("judge", teacher=teacher)
        accepted, rejected, counts, _ = select_revisions(rows, responses, samples, gate)
        assert [a["id"] for a in accepted] == ["w"]
        assert {r["id"]: r["reason"] for r in rejected} == {"f": "gate_not_better", "l": "gate_not_better"}
        assert set(next(r for r in rejected if r["id"] == "f")["verdict"]["judge"].values()) == {"tie"}
        sent = server.total_hits
        assert sent == 6  # three pairs, both orders, one joint request each
        again = openai_teacher(server, tmp_path / "cache.jsonl")  # same cache: a rerun is free
        select_revisions(rows, responses, samples, make_gate("judge", teacher=again))
        assert server.total_hits == sent and again.ledger.summary()["requests_sent"] == 0


class CyclingReply:
    """Sample j of a revision request gets answer j % len(answers) (the server varies like a sampler)."""

    def __init__(self, answers):
        self.answers, self.seen, self.lock = answers, {}, threading.Lock()

    def __call__(self, messages):
        key = messages[-1]["content"]
        with self.lock:
            n = self.seen[key] = self.seen.get(key, -1) + 1
        return self.answers[n % len(self.answers)]


def test_best_of_k_with_teacher_samples_and_free_rerun(tmp_path):
    rows = [row("a"), row("b", instruction="What is the capital of Italy?", answers=("Rome",))]
    responses = {"a": "London", "b": "Milan"}
    with FaultServer(reply=CyclingReply(["Berlin", "Paris, the capital city of France", "Paris, Rome"])) as server:
        teacher = openai_teacher(server, tmp_path / "cache.jsonl", temperature=1.0)
        accepted, rejected, counts, _ = teacher_revisions(teacher, rows, responses, RevisionSettings(teacher_num_samples=3),
                                                          gate=make_gate("gold"))
        kept = {a["id"]: a["revision"] for a in accepted}
        # row a: samples 1 and 2 are right; 2 has the higher F1 ("paris rome" vs the longer sentence)
        assert kept == {"a": "Paris, Rome", "b": "Paris, Rome"}
        assert counts == {"accepted": 2}
        sent = server.total_hits
        assert teacher.ledger.summary()["requests_sent"] > 0 and sent >= 2
        again = openai_teacher(server, tmp_path / "cache.jsonl", temperature=1.0)
        assert teacher_revisions(again, rows, responses, RevisionSettings(teacher_num_samples=3), gate=make_gate("gold"))[0] == accepted
        assert server.total_hits == sent and again.ledger.summary()["requests_sent"] == 0


def test_reward_gate_with_trained_reward_model(tiny_model_dir, tmp_path):
    """C3 wiring: make_gate('reward') loads a reward model from disk and scores (prompt, answer) as trained."""
    from test_baselines_reward_model import model_args, rm_args, toy_pairs, write_jsonl

    from citing_trl.baselines.preferences import PreferenceArguments
    from citing_trl.baselines.reward_model import train_reward_model

    data = write_jsonl(tmp_path / "prefs.jsonl", [
        {"id": p["id"], "prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]} for p in toy_pairs(120)
    ])
    _, metrics = train_reward_model(PreferenceArguments(preferences=str(data), eval_fraction=0.25),
                                    rm_args(tmp_path / "rm"), model_args(tiny_model_dir))
    assert metrics["held_out_accuracy"] >= 0.8
    rows = [row("up", instruction="Describe item 500."), row("down", instruction="Describe item 501.")]
    responses = {"up": "the cat runs fast", "down": "the dog runs slow excellent"}
    samples = [done("the cat runs fast excellent"), done("the dog runs slow")]
    gate = make_gate("reward", reward_model=str(tmp_path / "rm"), margin=0.0)
    accepted, rejected, counts, _ = select_revisions(rows, responses, samples, gate)
    assert [a["id"] for a in accepted] == ["up"] and counts == {"accepted": 1, "gate_not_better": 1}
    assert rejected[0]["verdict"]["reward_draft"] > rejected[0]["verdict"]["reward_revision"]
    strict = make_gate("reward", reward_model=str(tmp_path / "rm"), margin=1e6)
    assert select_revisions(rows, responses, samples, strict)[2] == {"gate_not_better": 2}
