"""The gate registry: a gate is one class in one file, selectable by name once registered; gold scores are
computed once per text; gate settings are checked where the gate lives."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from trl import TrlParser

from citing_trl.errors import ConfigError, UserError
from citing_trl.jsonl import read_jsonl
from citing_trl.pipeline import CitingArguments
from citing_trl.reward import RewardModelError, RewardScorer
from citing_trl.round_result import RoundResult
from citing_trl.teacher import Completion
from citing_trl.verification import (
    GATES,
    Gate,
    RevisionSettings,
    Verdict,
    gate_label,
    gate_names,
    make_gate,
    register_gate,
    select_revisions,
)
from tests.testing_utils import gold_gate, no_gate


class DummyGate(Gate):
    """Keeps a revision only when it changed the draft (registered by the ``dummy_gate`` fixture only)."""

    name = "dummy"
    help = "keep the revisions that changed the draft"
    options = ("margin",)

    def __init__(self, margin: float = 0.0):
        self.margin = margin

    def check(self, candidates):
        return [Verdict(False, "gate_dummy", detail={"dummy": "unchanged"}) if c.identical else Verdict(True)
                for c in candidates]


@pytest.fixture
def dummy_gate():
    register_gate(DummyGate)
    yield DummyGate
    GATES.pop(DummyGate.name)


def row(rid: str, answers=("Paris",), source: str = "nq_open") -> dict:
    return {"id": rid, "instruction": "What is the capital of France?", "input": f"Context {rid}.",
            "criteria": "- Answer the question.", "category": "qa", "source": source, "answers": list(answers)}


def done(*texts: str) -> list[Completion]:
    return [Completion(t, "stop", 10, 5) for t in texts]


def test_registered_gate_is_selectable_by_name(dummy_gate):
    """Registering the class is the only edit: the flag parses, the settings check passes, make_gate builds it
    with its gate_<option> settings, selection and the model card use it."""
    (args,) = TrlParser((CitingArguments,)).parse_args_and_config(
        args=["--revision_gate", "dummy", "--gate_margin", "0.5"])
    assert args.revision_gate == "dummy" and gate_names()[-1] == "dummy"
    gate = make_gate(args)
    assert isinstance(gate, DummyGate) and gate.margin == 0.5
    rows = [row("same"), row("changed")]
    selection = select_revisions(rows, {"same": "Paris", "changed": "London"}, [done("Paris"), done("Paris")], gate)
    assert [a["id"] for a in selection.accepted] == ["changed"]
    assert selection.counts == {"accepted": 1, "gate_dummy": 1}
    assert selection.rejected[0]["verdict"] == {"dummy": "unchanged"} and selection.report["gate"] == "dummy"
    assert gate_label({"revision_gate": "dummy", "gate_margin": 0.5}) == "`dummy`"


def test_unregistered_gate_is_refused():
    assert "dummy" not in GATES
    with pytest.raises(ConfigError, match="--revision_gate must be one of none, gold, judge, reward, got 'dummy'"):
        CitingArguments(revision_gate="dummy")
    with pytest.raises(ConfigError, match="--revision_gate must be one of"):
        make_gate("dummy")


def test_two_gates_cannot_share_a_name(dummy_gate):
    class Another(DummyGate):
        pass

    with pytest.raises(ValueError, match="two gates are named 'dummy'"):
        register_gate(Another)
    register_gate(DummyGate)  # the same class again is harmless
    assert GATES["dummy"] is DummyGate


def test_registered_gate_runs_a_round_that_is_not_read_back(dummy_gate, tmp_path, tiny_model_dir, monkeypatch):
    """The pipeline and the model card need no edit for a new gate, and a round's result is kept in memory:
    the round is trained and summarised without reading its own files back."""
    from test_verification import run_oracle_round

    def read_back(*args, **kwargs):
        raise AssertionError("a fresh round read its own result back from disk")

    monkeypatch.setattr(RoundResult, "load", read_back)
    rdir, drafts, gold = run_oracle_round(tmp_path, tiny_model_dir, revision_gate="dummy")
    right = {i for i, d in drafts.items() if d == gold[i]}  # the oracle keeps these drafts: the dummy refuses them
    counts = json.loads((rdir / "revision_counts.json").read_text())
    assert counts == {"accepted": len(drafts) - len(right), "gate_dummy": len(right)}
    assert {r["id"] for r in read_jsonl(rdir / "rejected.jsonl")} == right
    summary = json.loads((rdir / "summary.json").read_text())
    assert summary["verification"]["revision_gate"] == "dummy" and summary["revision_counts"] == counts
    assert summary["trained_rows"] == len(read_jsonl(rdir / "revisions.jsonl")) == len(drafts) - len(right)
    assert "Revision gate: `dummy`;" in (rdir / "adapter" / "README.md").read_text()


@pytest.mark.parametrize("gate", [gold_gate, no_gate], ids=["gold", "none"])
def test_gold_score_is_computed_once_per_text(gate, monkeypatch):
    """The gate, the best-of-K ranking and the fix/break report share one gold score per (row, text)."""
    import citing_trl.verification.base as base

    calls: Counter = Counter()
    real = base.score_response

    def counting(source, text, answers, input=""):
        calls[(input, text)] += 1
        return real(source, text, answers, input)

    monkeypatch.setattr(base, "score_response", counting)
    rows = [row("a"), row("b"), row("c", answers=("Rome",)), row("d", source="alpaca", answers=("x",))]
    responses = {"a": "London", "b": "Paris", "c": "Rome", "d": "a poem"}
    samples = [done("Paris", "It is Paris.", "Rome"), done("Paris", "Paris", "Berlin"), done("", "Rome", "Milan"),
               done("verse", "a poem", "prose")]
    selection = select_revisions(rows, responses, samples, gate, RevisionSettings(keep_identical=True))
    assert selection.accepted
    assert calls and max(calls.values()) == 1, [key for key, n in calls.items() if n > 1]
    # what had to be scored: every draft, every revision the gate saw, the first sample (fix/break: proposed)
    scored = {(r["input"], responses[r["id"]]) for r in rows} | {(r["input"], s[0].text) for r, s in zip(rows, samples)}
    if gate is gold_gate:
        scored |= {(r["input"], c.text) for r, s in zip(rows, samples) for c in s if c.text}
    assert scored <= set(calls)


def test_the_gate_given_is_the_gate_recorded():
    """``gate_mode`` (a second name for the gate, kept for old callers) is gone: the gate object alone decides,
    and the report names it."""
    rows, responses, samples = [row("a")], {"a": "London"}, [done("Paris")]
    assert select_revisions(rows, responses, samples, gold_gate).counts == {"accepted": 1}
    assert select_revisions(rows, responses, samples, gold_gate).report["gate"] == "gold"
    with pytest.raises(TypeError, match="gate_mode"):
        select_revisions(rows, responses, samples, gold_gate, gate_mode="judge")


def test_reward_gate_settings_are_user_errors(tmp_path):
    with pytest.raises(ConfigError, match="--revision_gate reward needs --gate_reward_model") as err:
        make_gate("reward")
    assert err.value.flag == "gate_reward_model" and isinstance(err.value, UserError)
    with pytest.raises(RewardModelError, match="no such folder") as missing:
        make_gate("reward", reward_model=str(tmp_path / "nowhere"))
    assert isinstance(missing.value, UserError) and isinstance(missing.value, FileNotFoundError)
    with pytest.raises(FileNotFoundError):
        RewardScorer.load(tmp_path / "nowhere")
