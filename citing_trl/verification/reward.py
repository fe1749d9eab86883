"""The ``reward`` gate: keep r(k+1) only if the reward model scores it above r(k) by more than a margin.

The scorer is :class:`citing_trl.reward.RewardScorer` (a model trained by ``baselines/reward_model.py``,
loaded from ``--gate_reward_model``); both texts are scored as answers to the plain instruction turn, the
context the reward model was trained in. The revision's reward ranks a row's passing samples. A revision
identical to the draft passes unasked: it cannot score above itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from citing_trl.errors import ConfigError, check
from citing_trl.prompts import instruction_messages
from citing_trl.reward import RewardScorer
from citing_trl.verification.base import Candidate, Gate, Verdict, register_gate


@register_gate
class RewardGate(Gate):
    name = "reward"
    help = "the reward model scores the revision above the draft by more than gate_margin"
    options = ("reward_model", "margin")

    def __init__(self, scorer, margin: float = 0.0):
        self.scorer, self.margin = scorer, margin

    @classmethod
    def build(cls, *, teacher=None, reward_model: str | None = None, margin: float = 0.0, scorer=None) -> RewardGate:
        if scorer is None:
            if not reward_model:
                raise ConfigError("--revision_gate reward needs --gate_reward_model (a reward model folder or adapter)",
                                  flag="gate_reward_model")
            scorer = RewardScorer.load(reward_model)
        return cls(scorer, margin)

    @classmethod
    def check_settings(cls, settings) -> None:
        check(bool(settings.gate_reward_model), "gate_reward_model",
              f"is needed by --revision_gate {cls.name} (a reward model folder or adapter)", settings.gate_reward_model)

    @classmethod
    def label(cls, record: dict) -> str:
        return f"`{cls.name}` (margin {record['gate_margin']})"

    def check(self, candidates: Sequence[Candidate]) -> list[Verdict]:
        asked = [i for i, c in enumerate(candidates) if not c.identical]
        prompts = [instruction_messages(candidates[i].row["instruction"], candidates[i].row.get("input") or "")
                   for i in asked]
        texts = [candidates[i].revision for i in asked] + [candidates[i].draft for i in asked]
        scores = self.scorer.score(prompts + prompts, texts) if asked else []
        verdicts = [Verdict(True, ungated=True, detail={"reward": "identical"}) for _ in candidates]
        for n, i in enumerate(asked):
            revised, draft = float(scores[n]), float(scores[n + len(asked)])
            detail = {"reward_revision": round(revised, 6), "reward_draft": round(draft, 6), "margin": self.margin}
            keep = revised - draft > self.margin
            verdicts[i] = Verdict(keep, None if keep else "gate_not_better", score=revised, detail=detail)
        return verdicts
