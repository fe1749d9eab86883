"""Preference pairs for the reward model and DPO.

Three sources, one output schema (TRL's conversational preference format):
``{"id", "prompt": [user message], "chosen": [assistant message], "rejected": [assistant message]}``.

* A CITING run folder (``outputs/<run>``): every ``round_<k>/revisions.jsonl`` record (instruction, input,
  criteria, response, revision) gives teacher revision ≻ student answer, so the baselines spend exactly the
  teacher budget CITING spent (``pair_source="revision"``). With ``pair_source="gold"`` (or ``"both"``) the
  gold answer of each instruction (from ``gold_dataset``, matched by id) is preferred to every student answer
  of every round (``round_<k>/rollouts*.jsonl``).
* A ``.json``/``.jsonl`` file or a Hub data set with ``prompt``/``chosen``/``rejected`` columns (strings or chat
  messages).
* ``choices:<data spec>`` (:func:`multiple_choice_pairs`): gold answer ≻ a wrong answer, for every QA source with
  gold answers, so the QA mixture gets pairs: another lettered option (CommonsenseQA, PIQA, OpenBookQA), the
  flipped answer (BoolQ yes/no), for SQuAD v2 / QuAC the gold span ≻ the abstention sentence on answerable
  questions and the abstention ≻ a sentence of the passage on unanswerable ones, and for NQ-open / TriviaQA
  another row's gold answer (seeded). A rejected answer is never one the row's own gold metric accepts. Each
  pair carries its ``kind`` (:data:`PAIR_KINDS`), so held-out accuracy is also reported per kind.

The prompt is always the plain instruction turn (:func:`citing_trl.prompts.instruction_messages`), the very
prompt the policy answers, so a reward model scores answers in the context it will see them in RL.

A row without ``chosen``/``rejected`` raises :class:`PreferenceError` naming the row; a pair whose two sides are
equal is skipped and counted (``stats["skipped_equal"]``).
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from citing_trl.data import NO_ANSWER, load_instructions
from citing_trl.errors import UserError
from citing_trl.evaluation.gold import GOLD_SOURCES, OPEN_SOURCES, SPAN_SOURCES, is_correct, is_no_answer
from citing_trl.jsonl import iter_jsonl, read_jsonl
from citing_trl.prompts import instruction_messages
from citing_trl.round_result import read_rollouts
from citing_trl.run_layout import round_dirs, round_index

logger = logging.getLogger(__name__)

PAIR_SOURCES = ("revision", "gold", "both")


class PreferenceError(UserError, ValueError):
    """Unusable preference input; the message names the file and the row."""


@dataclass
class PreferenceArguments:
    """Where preference pairs come from (reward model, DPO)."""

    preferences: str = field(
        default="",
        metadata={"help": "A CITING run folder (pairs from its round_<k>/ files), a .json/.jsonl file of "
                          "{prompt, chosen, rejected} rows, a Hub data set id with those columns, or "
                          "'choices:<data spec>' (gold answer ≻ a wrong answer of QA rows: another option, the flipped yes/no, "
                          "abstention vs span for SQuAD v2, another row's answer for NQ-open)."},
    )
    pair_source: str = field(
        default="revision",
        metadata={"help": "For a CITING run: 'revision' (teacher revision ≻ student answer), 'gold' (gold answer ≻ "
                          "student answer; needs gold_dataset) or 'both'."},
    )
    gold_dataset: str | None = field(
        default=None,
        metadata={"help": "Data spec (as in `dataset`) whose `output` is the gold answer, matched to the run by id."},
    )
    eval_fraction: float = field(
        default=0.1, metadata={"help": "Share of pairs held out (by prompt) to report pair accuracy; 0 = none."}
    )
    preference_seed: int = field(default=42, metadata={"help": "Seed for the held-out split and sub-sampling."})
    max_pairs: int | None = field(default=None, metadata={"help": "Keep at most this many pairs (seeded sample)."})

    def __post_init__(self):
        if self.pair_source not in PAIR_SOURCES:
            raise PreferenceError(f"--pair_source {self.pair_source!r}: expected one of {', '.join(PAIR_SOURCES)}")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise PreferenceError(f"--eval_fraction {self.eval_fraction}: expected a value in [0, 1)")


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def make_pair(row_id: str, instruction: str, input: str, chosen: str, rejected: str) -> dict:
    return {
        "id": row_id,
        "prompt": instruction_messages(instruction, input or ""),
        "chosen": _assistant(chosen.strip()),
        "rejected": _assistant(rejected.strip()),
    }


def _text(side) -> str:
    """The answer text of one side of a pair (a string or chat messages ending in the assistant turn)."""
    if isinstance(side, str):
        return side
    if isinstance(side, list) and side and isinstance(side[-1], dict):
        return str(side[-1].get("content", ""))
    return ""


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def _keep(pairs: list[dict], stats: Counter) -> list[dict]:
    kept = []
    for p in pairs:
        if _norm(_text(p["chosen"])) == _norm(_text(p["rejected"])):
            stats["skipped_equal"] += 1
            logger.info("skipping pair %s: chosen and rejected are the same answer", p.get("id"))
            continue
        kept.append(p)
    stats["pairs"] = len(kept)
    return kept


# --------------------------------------------------------------------------------------------------
# From a CITING run
# --------------------------------------------------------------------------------------------------


def pairs_from_run(run_dir: str | Path, pair_source: str = "revision", gold: dict[str, dict] | None = None,
                   stats: Counter | None = None) -> list[dict]:
    """Preference pairs from a CITING run's rounds (see module docstring)."""

    run_dir = Path(run_dir)
    stats = stats if stats is not None else Counter()
    rounds = round_dirs(run_dir)
    if not rounds:
        raise PreferenceError(f"{run_dir}: no round_<k>/ folders; is this a CITING run's output_dir?")
    pairs: list[dict] = []
    # Rollout records carry only an id: map it to the instruction text through the run's revision records.
    by_id_text: dict[str, tuple] = {}
    for f in (rdir / "revisions.jsonl" for rdir in rounds):
        for rec in read_jsonl(f):
            by_id_text[rec.get("id")] = (_norm(rec.get("instruction") or ""), _norm(rec.get("input") or ""))
    for rdir in rounds:
        k = round_index(rdir)
        if pair_source in ("revision", "both"):
            path = rdir / "revisions.jsonl"
            for n, rec in enumerate(read_jsonl(path), 1):
                missing = [f for f in ("id", "instruction", "response", "revision") if not isinstance(rec.get(f), str)]
                if missing:
                    raise PreferenceError(f"{path} row {n}: missing field(s) {', '.join(missing)}")
                pairs.append({**make_pair(rec["id"], rec["instruction"], rec.get("input") or "", rec["revision"],
                                          rec["response"]), "round": int(k), "kind": "revision"})
        if pair_source in ("gold", "both"):
            if gold is None:
                raise PreferenceError("--pair_source gold needs --gold_dataset (the rows with the gold answers)")
            for rec in read_rollouts(rdir, full=True).values():  # every rank's shard
                row = gold.get(rec.get("id"))
                if row is None and rec.get("id") in by_id_text:  # same instruction, other id scheme
                    row = gold.get(by_id_text[rec["id"]])
                if row is None or not (row.get("output") or "").strip():
                    stats["no_gold"] += 1
                    continue
                pairs.append({**make_pair(rec["id"], row["instruction"], row.get("input") or "", row["output"],
                                          rec.get("response") or ""), "round": int(k), "kind": "gold"})
    return pairs


# --------------------------------------------------------------------------------------------------
# From a {prompt, chosen, rejected} file or Hub data set
# --------------------------------------------------------------------------------------------------


def _as_prompt(prompt, where: str) -> list[dict]:
    if isinstance(prompt, str):
        if not prompt.strip():
            raise PreferenceError(f"{where}: empty prompt")
        return instruction_messages(prompt)
    if isinstance(prompt, list) and all(isinstance(m, dict) and "role" in m for m in prompt):
        return prompt
    raise PreferenceError(f"{where}: prompt must be a string or a list of chat messages")


def _as_answer(side, name: str, where: str) -> list[dict]:
    if isinstance(side, str):
        return _assistant(side.strip())
    if isinstance(side, list) and side and all(isinstance(m, dict) for m in side):
        last = side[-1]
        if last.get("role") != "assistant":
            raise PreferenceError(f"{where}: {name} must end with an assistant message")
        return [last]  # the prompt column carries the conversation before it
    raise PreferenceError(f"{where}: {name} must be a string or chat messages")


def normalize_rows(rows, where: str) -> list[dict]:
    pairs = []
    for n, row in enumerate(rows, 1):
        here = f"{where} row {n}" + (f" (id {row['id']})" if isinstance(row, dict) and row.get("id") else "")
        if not isinstance(row, dict):
            raise PreferenceError(f"{here}: not a JSON object")
        missing = [f for f in ("prompt", "chosen", "rejected") if row.get(f) in (None, "", [])]
        if missing:
            raise PreferenceError(f"{here}: missing {', '.join(missing)} (preference rows need prompt, chosen, rejected)")
        pairs.append({
            "id": str(row.get("id") or f"pair-{n}"),
            "prompt": _as_prompt(row["prompt"], here),
            "chosen": _as_answer(row["chosen"], "chosen", here),
            "rejected": _as_answer(row["rejected"], "rejected", here),
        })
    return pairs


def read_rows(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [row for _, row in iter_jsonl(text, str(path), PreferenceError)]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise PreferenceError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(data, list):
        raise PreferenceError(f"{path}: expected a JSON list of preference rows")
    return data


# --------------------------------------------------------------------------------------------------
# Gold ≻ a wrong answer, for QA rows with gold answers (the QA mixture)
# --------------------------------------------------------------------------------------------------

_CHOICE = re.compile(r"^\s*([A-Z])\.\s+(.+?)\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")

PAIR_KINDS = ("choice", "yes_no", "answer_over_abstention", "abstention_over_passage", "other_row_answer")
"""``kind`` of a ``choices:`` pair: another lettered option; the flipped yes/no; an answerable SQuAD v2 / QuAC
question, gold span ≻ the abstention sentence; an unanswerable one, abstention ≻ a passage sentence; open QA
(NQ-open, TriviaQA), gold ≻ another row's gold answer."""


def wrong_answers(row: dict) -> list[str]:
    """The wrong answers of a closed-answer QA row: other lettered choices, or the other of yes/no."""
    output = (row.get("output") or "").strip()
    choices = [line.strip() for line in (row.get("input") or "").splitlines() if _CHOICE.match(line)]
    if choices and output in choices:
        return [c for c in choices if c != output]
    if output.lower() in ("yes", "no"):
        return ["no" if output.lower() == "yes" else "yes"]
    return []


def passage_sentences(input: str) -> list[str]:
    """The sentences of a reading-comprehension row's passage (the text after ``Passage:``, without QuAC's
    conversation history), of at least three words."""
    text = input.split("Passage:", 1)[1] if "Passage:" in input else input
    text = text.split("\n\nConversation so far:", 1)[0]
    return [t.strip() for t in _SENTENCE_END.split(" ".join(text.split())) if len(t.split()) >= 3]


def _wrong_for(row: dict, candidates: list[str]) -> list[str]:
    """The candidates the row's own gold metric scores wrong (so a rejected answer is never secretly right)."""
    return [c for c in candidates if c.strip() and not is_correct(row["source"], c, row["answers"], row.get("input") or "")]


def rejected_answer(row: dict, rng: random.Random, open_answers: list[tuple[str, str]] | None = None
                    ) -> tuple[str, str] | None:
    """(rejected answer, pair kind) for one row (gold ``output`` ≻ it), or None when the row gives no pair.
    Rows of a known gold source are handled by source (see :data:`PAIR_KINDS`); others by their lettered
    choices or a yes/no output. ``open_answers`` are (row id, gold answer) of the open-QA rows of the row's
    source; the row's own entry is never drawn."""
    source, output = row.get("source"), (row.get("output") or "").strip()
    has_gold = source in GOLD_SOURCES and bool(row.get("answers"))
    if not output:
        return None
    if source in SPAN_SOURCES and has_gold:
        if is_no_answer(output):  # unanswerable: a plausible-looking sentence of the passage is wrong
            wrong = _wrong_for(row, passage_sentences(row.get("input") or ""))
            return (rng.choice(wrong), "abstention_over_passage") if wrong else None
        return NO_ANSWER, "answer_over_abstention"
    if source in OPEN_SOURCES and has_gold:
        pool = open_answers or []
        for _ in range(20 if pool else 0):  # seeded draws; the row itself or an answer right for it is redrawn
            rid, pick = pool[rng.randrange(len(pool))]
            if rid != row.get("id") and _wrong_for(row, [pick]):
                return pick, "other_row_answer"
        return None
    wrong = wrong_answers(row)
    if has_gold:
        wrong = _wrong_for(row, wrong)
    if not wrong:
        return None
    return rng.choice(wrong), ("yes_no" if output.lower() in ("yes", "no") else "choice")


def multiple_choice_pairs(rows, seed: int = 42, stats: Counter | None = None) -> list[dict]:
    """Gold answer ≻ one wrong answer (seeded) per row, for every QA source with gold answers: lettered choices
    and yes/no as before, SQuAD v2 / QuAC by answerability, NQ-open / TriviaQA against another row's gold answer
    (:func:`rejected_answer`). Rows that give no pair are left out; ``stats`` counts pairs per kind
    (``pairs_<kind>``) and ``rows_without_pairs``."""
    rows = list(rows)
    rng = random.Random(seed)
    stats = stats if stats is not None else Counter()
    open_answers: dict[str, list[tuple[str, str]]] = {}  # (row id, gold answer) per open source
    for row in rows:
        if row.get("source") in OPEN_SOURCES and (row.get("output") or "").strip():
            open_answers.setdefault(row["source"], []).append((row.get("id"), row["output"].strip()))
    pairs = []
    for row in rows:
        found = rejected_answer(row, rng, open_answers.get(row.get("source")))
        if found is None:
            stats["rows_without_pairs"] += 1
            continue
        rejected, kind = found
        stats[f"pairs_{kind}"] += 1
        pairs.append({**make_pair(row["id"], row["instruction"], row.get("input") or "", row["output"], rejected),
                      "kind": kind, "source": row.get("source") or ""})
    return pairs


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------


def load_preferences(args: PreferenceArguments) -> tuple[list[dict], Counter]:
    """All pairs for ``args`` (equal pairs skipped), plus counts. Raises PreferenceError on bad input."""
    stats: Counter = Counter()
    spec = args.preferences
    if not spec:
        raise PreferenceError("--preferences is empty: give a CITING run folder, a preference file or a Hub id")
    path = Path(spec).expanduser()
    if spec.startswith("choices:"):  # gold answer ≻ a wrong answer, from QA rows with gold answers

        rows = load_instructions(spec[len("choices:"):], split="train")
        pairs = multiple_choice_pairs(rows, seed=args.preference_seed, stats=stats)
    elif path.is_dir():
        gold = None
        if args.gold_dataset:

            gold = {}
            for r in load_instructions(args.gold_dataset, split="train"):
                gold[r["id"]] = r
                gold[(_norm(r["instruction"]), _norm(r.get("input") or ""))] = r
        pairs = pairs_from_run(path, args.pair_source, gold, stats)
    elif path.suffix in (".json", ".jsonl") or path.exists():
        if not path.is_file():
            raise PreferenceError(f"--preferences {spec}: no such file")
        pairs = normalize_rows(read_rows(path), str(path))
    else:
        import datasets

        try:
            data = datasets.load_dataset(spec, split="train")
        except Exception as err:
            raise PreferenceError(f"--preferences {spec}: not a folder, file or loadable Hub data set ({err})") from None
        pairs = normalize_rows(data, spec)
    pairs = _keep(pairs, stats)
    if args.max_pairs is not None and len(pairs) > args.max_pairs:
        pairs = random.Random(args.preference_seed).sample(pairs, args.max_pairs)
        stats["pairs"] = len(pairs)
    if not pairs:
        raise PreferenceError(f"--preferences {spec}: no usable pairs ({dict(stats)})")
    return pairs, stats


def split_pairs(pairs: list[dict], eval_fraction: float, seed: int = 42) -> tuple[list[dict], list[dict]]:
    """Train/held-out split by prompt id, so no held-out prompt was seen in training."""
    if eval_fraction <= 0:
        return pairs, []
    ids = sorted({p["id"] for p in pairs})
    random.Random(seed).shuffle(ids)
    n_eval = max(1, round(len(ids) * eval_fraction)) if len(ids) > 1 else 0
    held = set(ids[:n_eval])
    return [p for p in pairs if p["id"] not in held], [p for p in pairs if p["id"] in held]


def pairs_dataset(pairs: list[dict]):
    import datasets

    return datasets.Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs])
