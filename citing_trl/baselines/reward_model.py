"""Reward model: TRL ``RewardTrainer`` with LoRA on the student's backbone, and a scorer for RL loops (contract C3).

Training. The backbone is loaded as ``AutoModelForSequenceClassification(num_labels=1)``; LoRA adapts the
attention projections and the fresh ``score`` head is trained in full and saved with the adapter
(``modules_to_save=["score"]``). Pairs are TRL's conversational format (prompt = the plain instruction turn,
chosen/rejected = one assistant turn), so RewardTrainer tokenizes ``prompt + answer`` with the chat template
and, for conversational data, appends NO extra EOS (TRL 1.16 ``RewardTrainer._prepare_dataset`` adds EOS to
plain-text rows only; the chat template already closes the turn). The reward is read at the last non-pad
token: when the tokenizer's pad token is its EOS (SmolLM2: both ``<|im_end|>``), the reward tokenizer gets a
separate pad token from its own vocabulary (``<|endoftext|>``) so pooling never skips the closing tokens.

Scoring. :class:`RewardScorer` tokenizes every (prompt, completion) with the same TRL function RewardTrainer
uses (``trl.data_utils._tokenize`` on ``prompt + [assistant turn]``), right-pads with the saved pad token and
reads the pooled logit, so train-time and score-time text are identical (tested). Completions arrive as
text and are re-tokenized with the reward model's own tokenizer: a policy with a different tokenizer works;
token ids are never passed between the two. The scorer lives in the core (:mod:`citing_trl.reward`), so the
revision gate uses it without importing the baselines.

Honesty. ``eval_metrics.json`` reports the held-out pair accuracy with its n, wins and ties, a 95% Wilson score
interval and ``at_chance: true`` when that interval contains 0.5 (a reward model no better than a coin).
:func:`reward_model_quality` reads it back for other code (the comparison table, RAFT, RRHF, PPO).
:func:`reward_for_run` is how a reward-driven baseline picks its reward (``--reward model|gold``): it loads the
reward model (warning loudly when it is at chance or unmeasured) or builds the verifiable
:class:`~citing_trl.reward.GoldScorer`, and :func:`write_reward_info` records the choice as ``reward.json`` in the
run's output folder.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from trl import RewardConfig

from citing_trl.baselines.preferences import PreferenceArguments, load_preferences, pairs_dataset, split_pairs
from citing_trl.baselines.ranks import RankDigestCallback
from citing_trl.distributed import check_engine, save_adapter
from citing_trl.errors import ConfigError
from citing_trl.evaluation.gold import is_correct
from citing_trl.evaluation.stats import Z_975
from citing_trl.models import load_tokenizer, resolve_model_path
from citing_trl.precision import NativeBf16
from citing_trl.reward import META_FILE, GoldScorer, RewardScorer, load_backbone  # the scorers live in the core
from citing_trl.sft import lora_config

logger = logging.getLogger(__name__)


@dataclass
class RewardModelConfig(NativeBf16, RewardConfig):
    """TRL ``RewardConfig`` with this suite's defaults (CPU-friendly, LoRA, score head saved)."""

    max_length: int | None = field(
        default=512, metadata={"help": "Pairs longer than this (prompt + answer tokens) are dropped, as TRL does."}
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for memory."})
    report_to: str | list[str] = field(default="none", metadata={"help": "Where to log (none, wandb, ...)."})
    score_batch_size: int = field(default=8, metadata={"help": "Rows per forward pass when scoring held-out pairs."})


def reward_tokenizer(name_or_path: str):
    """The backbone's tokenizer with a pad token that is not its EOS, when the vocabulary has one."""

    tokenizer = load_tokenizer(name_or_path)
    if tokenizer.pad_token_id == tokenizer.eos_token_id:
        vocab = tokenizer.get_vocab()
        for candidate in (tokenizer.unk_token, "<|endoftext|>", "<pad>", "<unk>"):
            if candidate and candidate in vocab and vocab[candidate] != tokenizer.eos_token_id:
                tokenizer.pad_token = candidate
                break
        else:
            logger.warning("reward tokenizer: pad token equals EOS and no other pad token exists; the reward is "
                           "read at the last token that is not EOS (the same at training and scoring)")
    return tokenizer


def reward_lora_config(model_args):
    """The student's LoRA settings for a sequence-classification backbone whose score head is trained in full."""

    return lora_config(model_args, lora_task_type="SEQ_CLS", lora_modules_to_save=["score"])


def train_reward_model(pref_args: PreferenceArguments, training_args: RewardModelConfig, model_args):
    """Train the reward model on ``pref_args`` pairs; save adapter + head + tokenizer + metadata; report the
    held-out pair accuracy (``eval_metrics.json``). Returns (trainer, metrics)."""
    from transformers import set_seed
    from trl import RewardTrainer

    pairs, stats = load_preferences(pref_args)
    train, held = split_pairs(pairs, pref_args.eval_fraction, pref_args.preference_seed)
    logger.info("reward model: %d training pairs, %d held out (%s)", len(train), len(held), dict(stats))
    set_seed(training_args.seed)
    base = resolve_model_path(model_args.model_name_or_path)
    tokenizer = reward_tokenizer(base)
    model = load_backbone(base, tokenizer, model_args.dtype)
    training_args.pad_token = tokenizer.pad_token
    trainer = RewardTrainer(
        model=model, args=training_args, train_dataset=pairs_dataset(train), processing_class=tokenizer,
        peft_config=reward_lora_config(model_args), callbacks=[RankDigestCallback()],
    )
    check_engine(trainer.accelerator)
    trainer.train()
    out = Path(training_args.output_dir)
    save_adapter(trainer, out)
    metrics = {"train_pairs": len(train), "held_out_pairs": len(held), **{k: int(v) for k, v in stats.items()}}
    if trainer.accelerator.is_main_process:
        (out / META_FILE).write_text(json.dumps({
            "base_model": base, "pad_token": tokenizer.pad_token, "max_length": training_args.max_length,
            "format": "trl-conversational: chat_template(prompt + [assistant answer]), no extra EOS",
        }, indent=2))
        if held:
            scorer = RewardScorer(trainer.accelerator.unwrap_model(trainer.model), tokenizer,
                                  batch_size=training_args.score_batch_size)
            metrics.update(pair_accuracy(scorer, held))
        else:
            metrics.update(accuracy_summary(0, 0))
        (out / "eval_metrics.json").write_text(json.dumps(metrics, indent=2))
        logger.info("reward model metrics: %s", metrics)
        if not metrics["better_than_chance"]:
            logger.warning("reward model %s: held-out %s; methods that optimise it may optimise noise", out,
                           describe_quality(reward_model_quality(out)))
    return trainer, metrics


def wilson_interval(successes: int, n: int, z: float = Z_975) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% for the default z); (0, 1) when n = 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_summary(wins: int, n: int, ties: int = 0) -> dict:
    """Held-out pair accuracy with its n, a 95% Wilson interval and the chance labels: ``at_chance`` when the
    interval contains 0.5, ``better_than_chance`` when it lies above it (None for both when n = 0)."""
    if n <= 0:
        return {"held_out_pairs": 0, "held_out_accuracy": None, "held_out_wins": 0, "held_out_ties": 0,
                "held_out_ci95": None, "at_chance": None, "better_than_chance": None}
    low, high = wilson_interval(wins, n)
    return {"held_out_pairs": n, "held_out_accuracy": wins / n, "held_out_wins": wins, "held_out_ties": ties,
            "held_out_ci95": [low, high], "ci_method": "wilson", "at_chance": low <= 0.5 <= high,
            "better_than_chance": low > 0.5}


def pair_accuracy(scorer: "RewardScorer", pairs: list[dict]) -> dict:
    """Share of pairs whose chosen answer scores above the rejected one (ties count as wrong), with
    :func:`accuracy_summary`'s interval and labels, the mean margin, and the accuracy per pair ``kind``
    (preferences.py tags mixture pairs: ``yes_no``, ``choice``, ``answer_over_abstention``, ...)."""
    prompts = [p["prompt"] for p in pairs]
    chosen = scorer.score(prompts, [p["chosen"][-1]["content"] for p in pairs])
    rejected = scorer.score(prompts, [p["rejected"][-1]["content"] for p in pairs])
    won = [c > r for c, r in zip(chosen, rejected)]
    out = accuracy_summary(sum(won), len(pairs), ties=sum(c == r for c, r in zip(chosen, rejected)))
    out["held_out_margin"] = sum(c - r for c, r in zip(chosen, rejected)) / len(pairs)
    kinds: dict[str, list[bool]] = {}
    for p, w in zip(pairs, won):
        if p.get("kind"):
            kinds.setdefault(p["kind"], []).append(w)
    if kinds:
        out["held_out_by_kind"] = {k: {"n": len(v), "accuracy": sum(v) / len(v)} for k, v in sorted(kinds.items())}
    return out


def reward_model_quality(path: str | Path) -> dict:
    """How good the reward model at ``path`` is, from its ``eval_metrics.json``: ``{path, held_out_pairs,
    held_out_accuracy, held_out_ci95, at_chance, better_than_chance, label}``. ``label`` is ``"above chance"``,
    ``"at chance"``, ``"below chance"`` or ``"unmeasured"`` (no held-out pairs, or a folder this project did not
    train). Files written before the interval existed are completed from their accuracy and n."""
    path = Path(path)
    metrics_file = path / "eval_metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    n = int(metrics.get("held_out_pairs") or 0)
    if n and metrics.get("held_out_ci95") is None and metrics.get("held_out_accuracy") is not None:
        metrics.update(accuracy_summary(round(metrics["held_out_accuracy"] * n), n, metrics.get("held_out_ties", 0)))
    if not n or metrics.get("held_out_accuracy") is None:
        summary = accuracy_summary(0, 0)
        return {"path": str(path), **{k: summary[k] for k in ("held_out_pairs", "held_out_accuracy", "held_out_ci95",
                                                               "at_chance", "better_than_chance")},
                "label": "unmeasured"}
    low, high = metrics["held_out_ci95"]
    label = "above chance" if low > 0.5 else "below chance" if high < 0.5 else "at chance"
    return {"path": str(path), "held_out_pairs": n, "held_out_accuracy": metrics["held_out_accuracy"],
            "held_out_ci95": [low, high], "at_chance": low <= 0.5 <= high, "better_than_chance": low > 0.5,
            "label": label}


def describe_quality(quality: dict) -> str:
    """One line for logs and tables: 'pair accuracy 0.52 (95% CI 0.42-0.62, n=100): at chance'."""
    if quality["label"] == "unmeasured":
        return "pair accuracy unmeasured (no held-out pairs in eval_metrics.json)"
    low, high = quality["held_out_ci95"]
    return (f"pair accuracy {quality['held_out_accuracy']:.3f} (95% CI {low:.3f}-{high:.3f}, "
            f"n={quality['held_out_pairs']}): {quality['label']}")


def reward_info(kind: str, reward_model: str | None, rows: list[dict], method: str,
                reward_function: str | None = None) -> dict:
    """The ``reward.json`` record of the reward a run optimises (RAFT, RRHF, PPO, RLOO), without loading it.

    ``kind="gold"``: counts the rows whose own gold answer the metric does not accept (no answer to them can ever be
    rewarded) and warns about them. ``kind="model"``: the reward model's :func:`reward_model_quality` (a warning when
    it is not above chance), or the importable ``reward_function`` PPO/RLOO may use instead, or neither (RRHF
    candidates that carry their own scores)."""
    if kind == "gold":
        unscorable = [r["id"] for r in rows
                      if not is_correct(r["source"], r.get("output") or r["answers"][0], r["answers"], r.get("input") or "")]
        if unscorable:
            logger.warning("%s: %d of %d rows have a gold answer their own metric does not accept (e.g. %s); no answer "
                           "to them can earn the gold reward", method, len(unscorable), len(rows), ", ".join(unscorable[:5]))
        return {"method": method, "kind": "gold", "reward_model": None,
                "definition": "1 when the answer is right under its source's primary gold metric "
                              "(citing_trl.evaluation.gold.is_correct, the gold gate's notion of right), else 0",
                "rows": len(rows), "rows_gold_not_accepted": len(unscorable), "label": "gold (verifiable)"}
    if reward_function:
        return {"method": method, "kind": "model", "reward_model": None, "reward_function": reward_function,
                "label": f"reward function {reward_function}", "quality": None, "at_chance": None}
    if not reward_model:
        return {"method": method, "kind": "model", "reward_model": None, "label": "scores given with the data",
                "quality": None, "at_chance": None}
    quality = reward_model_quality(reward_model)
    if not quality["better_than_chance"]:
        logger.warning("%s is about to optimise the reward model %s, whose held-out %s: it is not shown to be better "
                       "than chance, so this run may optimise noise (consider --reward gold)", method, reward_model,
                       describe_quality(quality))
    else:
        logger.info("%s optimises the reward model %s: held-out %s", method, reward_model, describe_quality(quality))
    return {"method": method, "kind": "model", "reward_model": str(reward_model), "quality": quality,
            "at_chance": quality["at_chance"], "label": f"reward model, {describe_quality(quality)}"}


def reward_for_run(kind: str, reward_model: str | None, rows: list[dict], method: str, need_model: bool = True):
    """The reward a RAFT / RRHF run optimises and its ``reward.json`` record (:func:`reward_info`): ``(scorer, info)``.

    ``kind="gold"``: a :class:`~citing_trl.reward.GoldScorer` over ``rows`` (each needs ``source`` and gold
    ``answers``; ``--reward_model`` must be unset, it would contradict). ``kind="model"``: the reward model at
    ``reward_model`` (required when ``need_model``), loaded with :meth:`RewardScorer.load`. Without a path and
    ``need_model=False`` (RRHF candidates that carry their own scores) the scorer is None."""
    if kind == "gold":
        if reward_model:
            raise ConfigError(f"--reward_model {reward_model} contradicts --reward gold (the gold reward uses no "
                              "reward model): unset it (--reward_model '') or use --reward model", flag="reward_model")
        return GoldScorer(rows), reward_info(kind, None, rows, method)
    if kind != "model":
        raise ConfigError(f"--reward must be one of model, gold, got {kind!r}", flag="reward")
    if not reward_model and need_model:
        raise ConfigError(f"{method} with --reward model needs --reward_model (a folder written by "
                          "baselines/reward_model.py), or use --reward gold", flag="reward_model")
    info = reward_info(kind, reward_model, rows, method)
    return (RewardScorer.load(reward_model) if reward_model else None), info


def write_reward_info(output_dir: str | Path, info: dict) -> Path:
    """Write ``info`` (from :func:`reward_for_run`) as ``<output_dir>/reward.json``."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "reward.json").write_text(json.dumps(info, indent=2) + "\n")
    return out / "reward.json"
