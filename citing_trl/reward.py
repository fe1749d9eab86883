"""Scoring answers with a trained reward model (contract C3), shared by the CITING core and the baselines.

The ``reward`` revision gate (:mod:`citing_trl.verification.reward`) and the RL baselines (PPO, RLOO, RAFT, RRHF)
score text with the same :class:`RewardScorer`; training a reward model lives with the baselines
(:mod:`citing_trl.baselines.reward_model`), which import this module, never the other way round.

A reward model folder is a LoRA adapter with its saved ``score`` head and tokenizer (as
``train_reward_model`` writes it, with ``reward_model.json`` naming the backbone and pad token), or a full
sequence-classification model. :meth:`RewardScorer.encode` builds token ids with the very TRL function
``RewardTrainer`` tokenizes with (``prompt + [assistant turn]``, no extra EOS), right-pads with the saved pad
token and reads the pooled logit, so train-time and score-time text are identical. Completions arrive as text
and are re-tokenized with the reward model's own tokenizer: a policy with another tokenizer works.

:class:`GoldScorer` is the verifiable reward (``reward: gold``): the row's source's primary gold metric, the very
function the ``gold`` revision gate reads, behind the same ``score(prompts, completions)`` interface, so RAFT,
RRHF, PPO and RLOO can get the signal CITING's gate gets.

torch, transformers and peft are imported when a model is loaded or scored, so importing the gates (and hence
parsing a recipe's flags) stays cheap.
"""

from __future__ import annotations

import json
from pathlib import Path

from citing_trl.errors import DataError, UserError
from citing_trl.evaluation.gold import GOLD_SOURCES, primary_metric, score_response
from citing_trl.models import resolve_dtype, resolve_model_path
from citing_trl.prompts import instruction_messages

META_FILE = "reward_model.json"


class RewardModelError(UserError, FileNotFoundError):
    """The reward model folder does not exist (``--gate_reward_model``, ``--reward_model`` ...)."""


def load_backbone(name_or_path: str, tokenizer, dtype=None):
    """The backbone as ``AutoModelForSequenceClassification(num_labels=1)``, padding with ``tokenizer``'s pad."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        resolve_model_path(name_or_path), num_labels=1, dtype=resolve_dtype(dtype)
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


class RewardScorer:
    """Scores (prompt messages, completion text) pairs with a trained reward model (contract C3)."""

    def __init__(self, model, tokenizer, batch_size: int = 8, device=None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.device = device or next(model.parameters()).device

    @classmethod
    def load(cls, path_or_adapter: str | Path, base_model: str | None = None, device: str | None = None,
             batch_size: int = 8) -> "RewardScorer":
        """A reward model folder written by ``train_reward_model`` (LoRA adapter + score head + tokenizer),
        or a full sequence-classification model folder. ``base_model`` overrides the recorded backbone."""
        from transformers import AutoTokenizer

        path = Path(path_or_adapter)
        if not path.is_dir():
            raise RewardModelError(f"reward model {path}: no such folder")
        tokenizer = AutoTokenizer.from_pretrained(path)
        meta = json.loads((path / META_FILE).read_text()) if (path / META_FILE).is_file() else {}
        if meta.get("pad_token"):
            tokenizer.pad_token = meta["pad_token"]
        elif tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if (path / "adapter_config.json").is_file():
            from peft import PeftModel

            base = base_model or meta.get("base_model")
            if not base:
                base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
            model = load_backbone(base, tokenizer)
            model = PeftModel.from_pretrained(model, str(path))
        else:
            model = load_backbone(str(path), tokenizer)
        if device:
            model.to(device)
        return cls(model, tokenizer, batch_size=batch_size, device=device)

    def encode(self, prompt: list[dict], completion: str) -> list[int]:
        """Token ids exactly as RewardTrainer builds them for a conversational pair."""
        from trl.data_utils import _tokenize

        return list(_tokenize(self.tokenizer, prompt + [{"role": "assistant", "content": completion}],
                              tools=None)["input_ids"])

    def score(self, prompts: list[list[dict]], completions: list[str]) -> list[float]:
        import torch

        if len(prompts) != len(completions):
            raise ValueError(f"score(): {len(prompts)} prompts but {len(completions)} completions")
        encoded = [self.encode(p, c) for p, c in zip(prompts, completions)]
        pad = self.tokenizer.pad_token_id
        scores: list[float] = [0.0] * len(encoded)
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        with torch.no_grad():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                width = max(len(encoded[i]) for i in idx)
                ids = torch.full((len(idx), width), pad, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for row, i in enumerate(idx):  # right padding, as TRL's DataCollatorForPreference
                    ids[row, : len(encoded[i])] = torch.tensor(encoded[i])
                    mask[row, : len(encoded[i])] = 1
                out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), use_cache=False)
                for row, i in enumerate(idx):
                    scores[i] = float(out.logits[row, 0])
        return scores


class GoldScorer:
    """Verifiable reward from gold answers: 1.0 when a completion is right under its row's source's primary gold
    metric (:func:`citing_trl.evaluation.gold.primary_metric` of :func:`~citing_trl.evaluation.gold.score_response`:
    accuracy of the extracted yes/no or option; ``answer_in_response`` for open QA, abstention right on
    unanswerable SQuAD v2 / QuAC rows), else 0.0. It is the notion of *right* the ``gold`` gate uses.

    ``rows`` are the training rows (``instruction``, ``input``, ``answers``, ``source``); a prompt is matched to
    its row by the chat messages :func:`citing_trl.prompts.instruction_messages` builds for it (or by the raw
    string, for plain-text prompts). A row without gold answers, or a prompt that matches no row, is an error:
    a verifiable reward that silently scores 0 would train on noise."""

    def __init__(self, rows, prompt_fn=None):
        prompt_fn = prompt_fn or (lambda r: instruction_messages(r["instruction"], r.get("input") or ""))
        self._rows: dict[str, dict] = {}
        for row in rows:
            answers = [a for a in (row.get("answers") or []) if isinstance(a, str)]
            if row.get("source") not in GOLD_SOURCES or not answers:
                raise DataError(f"reward gold: row {row.get('id')!r} (source {row.get('source')!r}) has no gold "
                                f"answers; the gold reward needs a source with gold ({', '.join(sorted(GOLD_SOURCES))})")
            self._rows[self.key(prompt_fn(row))] = row

    @staticmethod
    def key(prompt) -> str:
        return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, ensure_ascii=False)

    def __len__(self) -> int:
        return len(self._rows)

    def row_for(self, prompt) -> dict:
        row = self._rows.get(self.key(prompt))
        if row is None:
            raise DataError(f"reward gold: no training row has the prompt {str(prompt)[:120]!r}")
        return row

    def score_one(self, prompt, completion: str) -> float:
        row = self.row_for(prompt)
        scores = score_response(row["source"], completion, row["answers"], row.get("input") or "")
        return float(scores[primary_metric(scores)])

    def score(self, prompts, completions: list[str]) -> list[float]:
        if len(prompts) != len(completions):
            raise ValueError(f"score(): {len(prompts)} prompts but {len(completions)} completions")
        return [self.score_one(p, c) for p, c in zip(prompts, completions)]

    __call__ = score  # a reward function f(prompts, completions) for PPO / RLOO
