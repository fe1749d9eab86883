"""RRHF: Rank Responses to align Human Feedback (Yuan et al., 2023; arXiv 2304.05302), on LoRA.

For each prompt x there are K candidate answers y_1..y_K with rewards r_1..r_K: samples from the SFT policy
(through :mod:`citing_trl.generation`, from the full distribution by default: ``--sample_top_k 0``, see
:data:`~citing_trl.baselines.common.SamplingArguments`), the ground truth and, when a CITING run is given, the teacher's
revisions; rewards come from the reward model (or from ``scores`` given in the data). The policy scores each
candidate by its length-normalised log-probability

    p_i = sum_t log pi(y_i,t | x, y_i,<t) / |y_i| ** length_penalty

and is trained with

    L = rrhf_weight * sum_{r_i > r_j} max(0, p_j - p_i)  +  CE(y_best)

where y_best is the candidate with the highest reward and CE is its mean token cross-entropy.

Deliberate differences from the official code (GanjinZero/RRHF ``train.py``), both bugs reported there:
* |y_i| is each candidate's OWN response length (tokens under the response mask), not the padded length of
  the batch (the official ``get_score`` divides by the padded width, repo issues #37/#42);
* the cross-entropy term is taken per prompt on that prompt's best candidate and averaged over the prompts of
  the batch; the official code takes it from the first prompt only (it assumes one prompt per batch).

The SFT term also differs from the official one even for one prompt per batch and equal-length candidates:
the official ``sft_loss`` is ``-logit_label[best].mean()``, a mean over the WHOLE padded row (prompt positions
and padding hold zeros but are counted), i.e. the summed response log-probability divided by the padded width
of the batch, T; here it is divided by the best candidate's own response length |y_best|. The official term
is therefore this one times |y_best| / T (< 1 whenever the prompt is not empty), so at the same
``rrhf_weight`` it weighs the SFT part less than here.

Defaults: ``rrhf_weight = 1.0`` (the weight in the authors' training scripts; the code's field default is
100), ``length_penalty = 1.0`` (the official default: the mean token log-probability).

A candidate whose response is cut to zero tokens by ``max_length`` (the prompt fills it) would score
p_i = 0, the best possible value, and distort the ranking: such candidates are dropped before ranking,
counted (``dropped_empty_candidates``) and logged by row id. A prompt whose remaining candidates all have the
same reward (or a single one) cannot be ranked, and a prompt with no candidates cannot be trained on: both are
skipped, counted and logged by row id (``build_candidates`` returns the counts).

Under the verifiable gold reward (``--reward gold``, :class:`~citing_trl.reward.GoldScorer`: 1 when right, else 0)
many groups are all equal. The ground truth is a candidate and scores 1, so a group is either all right (the
policy already answers it: ``skipped_equal_all_right``) or ranks every right candidate above every wrong one,
with the SFT term on the first right candidate (a right sample before the ground truth, which follows the
samples). A group can only be all wrong (``skipped_equal_all_wrong``) without the ground truth, or when the gold
metric does not accept the row's own gold answer; such rows are counted (``gold_candidate_not_accepted``) and
logged by id. All counts go to ``candidates.stats.json``.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from accelerate import PartialState
from transformers import Trainer, TrainingArguments
from trl.data_utils import common_prefix_length
from trl.trainer.utils import add_fused_lm_head

from citing_trl.baselines.common import SamplingArguments, revisions_for, sample_answers
from citing_trl.baselines.ranks import RankDigestCallback, gather, part_path, shard
from citing_trl.errors import ConfigError, DataError
from citing_trl.generation import DecodingConfig
from citing_trl.jsonl import read_jsonl, write_jsonl
from citing_trl.precision import NativeBf16
from citing_trl.prompts import instruction_messages
from citing_trl.reward import GoldScorer
from citing_trl.stages import is_done, run_stage, write_marker

logger = logging.getLogger(__name__)


@dataclass
class RRHFConfig(NativeBf16, TrainingArguments):
    """Training arguments of RRHF (transformers ``TrainingArguments`` + the method's own fields).
    ``per_device_train_batch_size`` counts prompts; each brings all its candidates. How candidates are sampled
    is a :class:`~citing_trl.generation.DecodingConfig` given to :func:`build_candidates` (``--sample_*``
    flags, :data:`~citing_trl.baselines.common.SamplingArguments`)."""

    rrhf_weight: float = field(default=1.0, metadata={"help": "Weight of the ranking loss against the SFT term "
                                                               "(authors' scripts: 1; their code's default: 100)."})
    length_penalty: float = field(default=1.0, metadata={"help": "Exponent of the candidate length that divides "
                                                                  "its summed log-probability (1 = mean log-prob)."})
    max_length: int = field(default=512, metadata={"help": "Prompt + candidate tokens kept (longer ones are cut "
                                                            "at the end)."})
    num_samples: int = field(default=4, metadata={"help": "Answers sampled from the SFT policy per prompt."})
    include_gold: bool = field(default=True, metadata={"help": "Add the ground-truth answer as a candidate."})
    include_revisions: bool = field(default=True, metadata={"help": "Add the teacher revisions of --citing_run."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the candidate columns (needed)."})
    report_to: str | list[str] = field(default="none", metadata={"help": "Where to log (none, wandb, ...)."})


# --------------------------------------------------------------------------------------------------
# Candidates
# --------------------------------------------------------------------------------------------------


def check_group(row_id: str, candidates: list[str], scores: list[float], stats: Counter, binary: bool = False) -> bool:
    """True if the prompt can be trained on; otherwise count and log why not. With a 0/1 reward (``binary``),
    equal groups are also counted as all right or all wrong."""
    if not candidates:
        stats["skipped_no_candidates"] += 1
        logger.warning("RRHF: skipping row %s: no candidates", row_id)
        return False
    if len(scores) != len(candidates):
        raise DataError(f"RRHF row {row_id}: {len(candidates)} candidates but {len(scores)} scores")
    if max(scores) == min(scores):
        stats["skipped_equal_scores"] += 1
        if binary:
            stats["skipped_equal_all_right" if scores[0] >= 1.0 else "skipped_equal_all_wrong"] += 1
        logger.warning("RRHF: skipping row %s: all %d candidates have the same reward", row_id, len(scores))
        return False
    return True


def drop_empty_candidates(row_id: str, tokenizer, prompt: list[dict], candidates: list[str], scores: list[float],
                          max_length: int, stats: Counter) -> tuple[list[str], list[float]]:
    """The candidates (and their scores) that keep at least one response token after cutting prompt + answer to
    ``max_length`` (:func:`encode_candidate`); the others are counted in ``stats["dropped_empty_candidates"]``
    and logged by row id."""
    keep = [sum(encode_candidate(tokenizer, prompt, c, max_length)[1]) > 0 for c in candidates]
    if dropped := keep.count(False):
        stats["dropped_empty_candidates"] += dropped
        logger.warning("RRHF: row %s: dropping %d of %d candidates: the prompt fills max_length=%d, so no response "
                       "token is left", row_id, dropped, len(candidates), max_length)
    return [c for c, k in zip(candidates, keep) if k], [s for s, k in zip(scores, keep) if k]


def build_candidates(rows, model, tokenizer, scorer, config: RRHFConfig, revisions: dict[str, list[str]] | None = None,
                     path: str | Path | None = None, sampling: DecodingConfig | None = None,
                     seed_offset: int = 0) -> tuple[list[dict], Counter]:
    """One record per usable prompt: ``{id, prompt, candidates, scores}``. Rows that already carry
    ``candidates`` (and optionally ``scores``) are used as given; otherwise ``config.num_samples`` candidates are
    sampled with ``sampling`` (default ``SamplingArguments().build()``, seeded with ``config.seed``), the ground
    truth and teacher revisions are added, and the reward model scores them all. With ``path`` this is a stage
    (:func:`~citing_trl.stages.run_stage`): the records are saved there and their counts in ``<path stem>.stats.json``,
    written last as the done marker, and a rerun reads them back instead of regenerating. ``seed_offset`` is added
    to the sampling seed (a rank's slice: the flat index of its first sample)."""
    if path is None:
        return _build_candidates(rows, model, tokenizer, scorer, config, revisions, sampling, seed_offset)
    path = Path(path)
    built: dict[str, list[dict]] = {}

    def work() -> dict:
        records, stats = _build_candidates(rows, model, tokenizer, scorer, config, revisions, sampling, seed_offset)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(path, records)
        built["records"] = records
        return dict(stats)

    result = run_stage(path.with_suffix(".stats.json"), work, name=f"RRHF candidates {path}")
    return (built["records"] if result.ran else read_jsonl(path)), Counter(result.record)


def build_candidates_on_ranks(rows, model, tokenizer, scorer, config: RRHFConfig, path: str | Path,
                              revisions: dict[str, list[str]] | None = None, sampling: DecodingConfig | None = None
                              ) -> tuple[list[dict], Counter]:
    """:func:`build_candidates` for ``path`` with the sampling split between the processes: each rank builds its
    contiguous slice of ``rows`` (its own stage, ``candidates.rank<r>.jsonl``, so a killed run resumes per rank),
    then every rank gets all records in row order, and the main process writes them to ``path`` with the summed
    counts as its done marker. Every rank trains on the same records; the trainer's sampler splits them (see
    :mod:`citing_trl.baselines.ranks`). One process, or a finished ``path``: :func:`build_candidates` itself."""
    state, path = PartialState(), Path(path)
    marker = path.with_suffix(".stats.json")
    if state.num_processes <= 1 or is_done(marker):  # every rank looks before the main process can write it
        return build_candidates(rows, model, tokenizer, scorer, config, revisions, path, sampling)
    start, mine = shard(list(rows), state)
    records, stats = build_candidates(mine, model, tokenizer, scorer, config, revisions, part_path(path, state),
                                      sampling, seed_offset=start * config.num_samples)
    records = gather(records)
    total: Counter = Counter()
    for counts in gather([dict(stats)]):
        total.update(counts)
    if state.is_main_process:
        write_jsonl(path, records)
        write_marker(marker, dict(total))
    state.wait_for_everyone()
    return records, total


def _build_candidates(rows, model, tokenizer, scorer, config: RRHFConfig, revisions, sampling,
                      seed_offset: int = 0) -> tuple[list[dict], Counter]:
    stats: Counter = Counter()
    rows = [dict(r) for r in rows]
    prompts = [instruction_messages(r["instruction"], r.get("input") or "") for r in rows]
    binary = isinstance(scorer, GoldScorer)
    gold_index: dict[int, int] = {}  # row -> index of its ground-truth candidate
    need_samples = [i for i, r in enumerate(rows) if not r.get("candidates")]
    sampling = sampling if sampling is not None else SamplingArguments().build()
    gen = replace(sampling, do_sample=True, seed=config.seed + seed_offset)
    sampled = sample_answers(model, tokenizer, [prompts[i] for i in need_samples], config.num_samples, gen,
                             desc="RRHF candidates") if need_samples else []
    for i, gens in zip(need_samples, sampled):
        row = rows[i]
        cands = [g.text for g in gens if g.text.strip()]
        if config.include_gold and (row.get("output") or "").strip():
            gold_index[i] = len(cands)
            cands.append(row["output"].strip())
        if config.include_revisions and revisions:
            cands.extend(revisions_for(revisions, row))
        row["candidates"] = cands
    to_score = [(i, j) for i, r in enumerate(rows) if not r.get("scores") for j in range(len(r["candidates"]))]
    if to_score:
        if scorer is None:
            raise ConfigError("RRHF: candidates without scores need a reward model (--reward_model)", flag="reward_model")
        values = scorer.score([prompts[i] for i, _ in to_score], [rows[i]["candidates"][j] for i, j in to_score])
        for (i, _), v in zip(to_score, values):
            rows[i].setdefault("scores", []).append(v)
    if binary:
        refused = [rows[i]["id"] for i, j in gold_index.items() if rows[i]["scores"][j] < 1.0]
        if refused:
            stats["gold_candidate_not_accepted"] = len(refused)
            logger.warning("RRHF: the gold reward does not accept the ground truth of %d rows (e.g. %s): their gold "
                           "metric cannot recognise a right answer", len(refused), ", ".join(refused[:5]))
    records = []
    for r, prompt in zip(rows, prompts):
        cands, scores = list(r.get("candidates") or []), [float(s) for s in r.get("scores") or []]
        if tokenizer is not None and len(cands) == len(scores):
            cands, scores = drop_empty_candidates(r["id"], tokenizer, prompt, cands, scores, config.max_length, stats)
        if check_group(r["id"], cands, scores, stats, binary):
            records.append({"id": r["id"], "prompt": prompt, "candidates": cands, "scores": scores})
    stats["prompts"] = len(records)
    return records, stats


# --------------------------------------------------------------------------------------------------
# Collation and loss
# --------------------------------------------------------------------------------------------------


def encode_candidate(tokenizer, prompt: list[dict], answer: str, max_length: int) -> tuple[list[int], list[int]]:
    """(input ids, response mask) of prompt + answer rendered by the chat template; the mask covers the answer and
    the tokens that close the assistant turn, as SFTTrainer's completion mask does."""
    prompt_ids = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
    full = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": answer}], tokenize=True,
                                         return_dict=True)["input_ids"]
    start = common_prefix_length(list(prompt_ids), list(full))
    full = list(full)[:max_length]
    mask = [0] * min(start, len(full)) + [1] * max(0, len(full) - start)
    return full, mask


@dataclass
class RRHFCollator:
    tokenizer: object
    max_length: int = 512

    def __call__(self, features: list[dict]) -> dict:
        ids, masks, group, rewards = [], [], [], []
        for g, f in enumerate(features):
            for answer, score in zip(f["candidates"], f["scores"]):
                i, m = encode_candidate(self.tokenizer, f["prompt"], answer, self.max_length)
                ids.append(i)
                masks.append(m)
                group.append(g)
                rewards.append(float(score))
        width = max(len(i) for i in ids)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
        attention = torch.zeros((len(ids), width), dtype=torch.long)
        response = torch.zeros((len(ids), width), dtype=torch.long)
        for row, (i, m) in enumerate(zip(ids, masks)):
            input_ids[row, : len(i)] = torch.tensor(i)
            attention[row, : len(i)] = 1
            response[row, : len(m)] = torch.tensor(m)
        return {"input_ids": input_ids, "attention_mask": attention, "response_mask": response,
                "group": torch.tensor(group), "rewards": torch.tensor(rewards, dtype=torch.float)}


def token_logps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor):
    """Log-probabilities of each next token and the mask of the ones that belong to a response: (N, T-1).

    Through TRL's fused LM head (:func:`trl.trainer.utils.add_fused_lm_head`, added by :class:`RRHFTrainer`): the
    vocabulary is projected in tiles, so the (N, T, V) logits and their log-softmax are never held in memory."""
    labels = input_ids.masked_fill(response_mask == 0, -100)
    out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, fused_lm_head=True)
    return out.log_probs, out.label_mask.to(out.log_probs.dtype)


def rrhf_loss(per_token: torch.Tensor, mask: torch.Tensor, group: torch.Tensor, rewards: torch.Tensor,
              rrhf_weight: float, length_penalty: float) -> tuple[torch.Tensor, dict]:
    """RRHF loss over a flat batch of candidates grouped by prompt (see module docstring).
    Returns (loss, info) with the per-prompt best candidate (flat index), rank and SFT terms."""
    lengths = mask.sum(-1).clamp(min=1)
    seq_scores = per_token.sum(-1) / lengths.pow(length_penalty)
    ranks, sfts, best = [], [], []
    for g in torch.unique(group, sorted=True):
        idx = (group == g).nonzero(as_tuple=True)[0]
        p, r = seq_scores[idx], rewards[idx]
        better = r.unsqueeze(1) > r.unsqueeze(0)  # better[i, j]: candidate i has the higher reward
        ranks.append(torch.relu(p.unsqueeze(0) - p.unsqueeze(1))[better].sum())
        b = idx[torch.argmax(r)]  # first of the best on ties
        best.append(int(b))
        sfts.append(-per_token[b].sum() / lengths[b])
    rank, sft = torch.stack(ranks).mean(), torch.stack(sfts).mean()
    loss = rrhf_weight * rank + sft
    return loss, {"rank_loss": rank.detach(), "sft_loss": sft.detach(), "best": best,
                  "seq_scores": seq_scores.detach()}


class RRHFTrainer(Trainer):
    """``transformers.Trainer`` with the RRHF loss. The train data set holds ``{prompt, candidates, scores}``
    rows (see :func:`build_candidates`)."""

    _name = "RRHF"

    def __init__(self, model, args: RRHFConfig, train_dataset, processing_class, **kwargs):
        kwargs.setdefault("data_collator", RRHFCollator(processing_class, args.max_length))
        kwargs.setdefault("callbacks", [RankDigestCallback()])
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        if not getattr(base, "fused_lm_head_added", False):  # once per model: a model may train in several stages
            add_fused_lm_head(base)
            base.fused_lm_head_added = True
        super().__init__(model=model, args=args, train_dataset=train_dataset, processing_class=processing_class,
                         **kwargs)
        self._rrhf_logs: dict[str, list[float]] = {"rank_loss": [], "sft_loss": []}
        self.last_info: dict = {}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        per_token, mask = token_logps(model, inputs["input_ids"], inputs["attention_mask"], inputs["response_mask"])
        loss, info = rrhf_loss(per_token, mask, inputs["group"], inputs["rewards"], self.args.rrhf_weight,
                               self.args.length_penalty)
        self.last_info = info
        if model.training:
            self._rrhf_logs["rank_loss"].append(float(info["rank_loss"]))
            self._rrhf_logs["sft_loss"].append(float(info["sft_loss"]))
        return (loss, {"log_probs": per_token}) if return_outputs else loss

    def log(self, logs: dict, *args, **kwargs):
        for key, values in self._rrhf_logs.items():
            if values:
                logs[key] = sum(values) / len(values)
                values.clear()
        super().log(logs, *args, **kwargs)
