"""CitingTrainer: curriculum instruction tuning on teacher revisions (Algorithm 1 line 10, Eq. 4).

A round's training row is built from a revision record (instruction x, input, criteria c, student answer
r(k), teacher revision r(k+1)):

    prompt     = pr(x, c, r(k))       (citing_trl.prompts.revision_messages)
    completion = r(k+1)

and the loss is the negative log-likelihood of the completion tokens only, exactly Eq. 4. CitingTrainer is
an SFTTrainer over that generated data set; everything SFTTrainer supports (packing, padding-free
batches, LoRA via peft, DeepSpeed/FSDP through accelerate) is available unchanged. Its settings,
:class:`~citing_trl.citing_config.CitingConfig`, live in ``citing_config.py``.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

from trl import SFTTrainer

from citing_trl.citing_config import CitingConfig
from citing_trl.errors import ConfigError, DataError
from citing_trl.prompts import revision_messages
from citing_trl.sft import to_prompt_completion
from citing_trl.train_stats import TokenCounter
from citing_trl.verification import gate_label

logger = logging.getLogger(__name__)

REVISION_COLUMNS = ("instruction", "input", "criteria", "response", "revision")

CITING_PAPER = {
    "title": "CITING: Large Language Models Create Curriculum for Instruction Tuning",
    "id": "2310.02527",
    "citation": (
        "@article{feng2023citing,\n"
        "  title   = {Citing: Large Language Models Create Curriculum for Instruction Tuning},\n"
        "  author  = {Feng, Tao and Wang, Zifeng and Sun, Jimeng},\n"
        "  journal = {arXiv preprint arXiv:2310.02527},\n"
        "  year    = {2023}\n"
        "}"
    ),
}


def revision_to_prompt_completion(row: dict, prompt_style: str = "improve") -> dict:
    """One revision record -> conversational {prompt, completion} for Eq. 4 (``prompt_style``: the header of pr)."""

    missing = [c for c in REVISION_COLUMNS if c not in row or row[c] is None]
    if missing:
        raise DataError(f"revision row {row.get('id', '?')!r} lacks {missing}")
    return {
        "prompt": revision_messages(row["instruction"], row["input"], row["criteria"], row["response"], prompt_style),
        "completion": [{"role": "assistant", "content": row["revision"]}],
    }


def build_citing_dataset(revisions, replay=None, replay_fraction: float = 0.0, seed: int = 0,
                         prompt_style: str = "improve"):
    """Revision records (+ optional replayed SFT rows) -> the data set CitingTrainer trains on."""
    from datasets import concatenate_datasets


    rows = revisions.map(revision_to_prompt_completion, fn_kwargs={"prompt_style": prompt_style},
                         remove_columns=revisions.column_names, desc="CITING rows")
    if replay is not None and replay_fraction > 0 and len(replay):
        k = min(len(replay), max(1, round(replay_fraction * len(revisions))))
        picked = replay.select(sorted(random.Random(seed).sample(range(len(replay)), k)))
        rows = concatenate_datasets([rows, to_prompt_completion(picked)]).shuffle(seed=seed)
    return rows


def verification_card_lines(v: dict | None) -> list[str]:
    """Model-card lines for the revision gate, best-of-K and the round's fix/break counts."""
    if not v:
        return []
    lines = [f"- Revision gate: {gate_label(v)}"
             + f"; identical revisions kept: {v['keep_identical']}; teacher samples per row: {v['teacher_num_samples']}"
             + (f" at temperature {v['teacher_temperature']}" if v["teacher_num_samples"] > 1 else "")]
    for name, label in (("proposed", "teacher proposed, before the gate"), ("kept", "kept and trained on")):
        fb = v.get("fix_break", {}).get(name)
        if fb:
            lines.append(f"- Fix/break on rows with gold, {label}: wrong→right {fb['wrong_to_right']}, right→wrong "
                         f"{fb['right_to_wrong']}, right→right {fb['right_to_right']}, wrong→wrong "
                         f"{fb['wrong_to_wrong']} (no gold: {fb['no_gold']})")
    return lines


class CitingTrainer(TokenCounter, SFTTrainer):
    """SFTTrainer over a generated revision data set (CITING Eq. 4). It counts the tokens it trains on
    (:class:`~citing_trl.train_stats.TokenCounter`), for the round's ``train_stats.json``.

    Args:
        revision_dataset: records with columns instruction, input, criteria, response (r(k)) and revision
            (r(k+1)), as written by :mod:`citing_trl.revision`.
        replay_dataset: optional original SFT rows (instruction, input, output) for replay.
        rubric_categories, round_index, num_rounds, teacher_model, revision_settings (how the revisions were
            made and filtered, e.g. ``revision_reference``), verification (gate, best-of-K, fix/break): recorded
            in the model card.
        revision_prompt: the header of the training prompt pr(x, c, r(k)) (``CitingArguments.revision_prompt``).
        Every other argument is SFTTrainer's.
    """

    _tag_names = ["trl", "citing", "curriculum-instruction-tuning"]
    _name = "CITING"
    _paper = CITING_PAPER

    def __init__(
        self,
        model,
        args: CitingConfig,
        revision_dataset,
        replay_dataset=None,
        rubric_categories: list[str] | None = None,
        round_index: int | None = None,
        num_rounds: int | None = None,
        teacher_model: str | None = None,
        verification: dict | None = None,
        revision_settings: dict | None = None,
        revision_prompt: str = "improve",
        **kwargs,
    ):
        if not isinstance(args, CitingConfig):
            raise TypeError("CitingTrainer needs a CitingConfig")
        train_dataset = build_citing_dataset(
            revision_dataset, replay_dataset, args.replay_fraction, seed=args.replay_seed, prompt_style=revision_prompt
        )
        self.citing_info = {
            "rubric_categories": list(rubric_categories or []),
            "round": round_index,
            "rounds": num_rounds,
            "teacher_model": teacher_model,
            "revision_rows": len(revision_dataset),
            "replayed_rows": len(train_dataset) - len(revision_dataset),
            "verification": verification,
            "revision_settings": dict(revision_settings or {}),
        }
        super().__init__(model=model, args=args, train_dataset=train_dataset, **kwargs)
        if not args.packing:
            self._check_lengths(len(train_dataset), args.max_length)

    def _check_lengths(self, n_rows: int, max_length: int | None) -> None:
        """Say how many rows TRL dropped (prompt alone too long) or cut (revision truncated, so its end-of-turn
        token is lost and the student would learn not to stop)."""
        kept = len(self.train_dataset)
        if max_length and "input_ids" in self.train_dataset.column_names:
            cut = sum(len(ids) >= max_length for ids in self.train_dataset["input_ids"])
            if cut:
                logger.warning(
                    "%d of %d CITING rows reach max_length=%d: their revision is cut short; raise max_length",
                    cut, kept, max_length,
                )
        if kept < n_rows:
            message = (
                f"{n_rows - kept} of {n_rows} CITING rows were dropped while tokenizing "
                f"(prompt pr(x, c, r) longer than max_length={max_length} leaves no revision token to learn)"
            )
            if kept == 0:
                raise ConfigError(message + "; raise max_length or shorten the criteria/answers", flag="max_length")
            logger.warning(message)

    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        if not self.is_world_process_zero():
            return
        info = self.citing_info
        lines = ["", "## CITING curriculum", ""]
        if info["round"] is not None:
            total = f" of {info['rounds']}" if info["rounds"] else ""
            lines.append(f"- Round: {info['round'] + 1}{total} (0-based index {info['round']})")
        if info["teacher_model"]:
            lines.append(f"- Teacher model: `{info['teacher_model']}`")
        lines.append(f"- Revision rows: {info['revision_rows']} (replayed SFT rows: {info['replayed_rows']})")
        if info["revision_settings"].get("revision_reference"):
            lines.append("- Reference-guided revision: on (the teacher saw the gold answer of rows that have one; the "
                         "student's training prompts do not contain it)")
        if info["revision_settings"]:
            lines.append("- Revision settings: " + ", ".join(f"{k}={v}" for k, v in info["revision_settings"].items()))
        if info["rubric_categories"]:
            lines.append("- Rubric categories: " + ", ".join(info["rubric_categories"]))
        lines += verification_card_lines(info.get("verification"))
        card = Path(self.args.output_dir) / "README.md"
        with card.open("a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
