"""The sources CITING reads (paper §4.1) and how one raw row of each becomes instruction rows.

A :class:`Source` names a data set's Hub id (with its config and which Hub split stands for each of ours) and its
converter: a function from one raw :class:`~citing_trl.data.readers.Row` to one or more rows in the schema of
:mod:`citing_trl.data.schema`. The same converter serves a Hub split and a local ``.json``/``.jsonl`` file with the
same rows. :data:`SOURCES` is the registry by name; :data:`FAMILIES` groups them as the paper evaluates them:

* ``world_knowledge``       = NaturalQuestions-open + TriviaQA
* ``reading_comprehension`` = SQuAD v2 + QuAC + BoolQ
* ``commonsense``           = PIQA + OpenBookQA + CommonsenseQA

(plus ``alpaca``, the training data). Adding a source is one converter and one :data:`SOURCES` entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from citing_trl.data.ifeval import HUB_ID as IFEVAL_HUB_ID
from citing_trl.data.ifeval import to_instruction_row
from citing_trl.data.readers import Row
from citing_trl.data.schema import NO_ANSWER, unique


def _question(q: str) -> str:
    q = q.strip()
    return q if not q or q[-1] in "?.!:" else q + "?"


def _ask(template: str, question: str) -> str:
    """Fill a template; a blank question gives an empty instruction (dropped and counted later)."""
    return template.format(q=_question(question)) if question.strip() else ""


def open_ended(r: Row) -> dict:
    """An Alpaca-style row: {instruction, input?, output}."""
    return {"instruction": r.text("instruction"), "input": r.text("input", ""), "output": r.text("output")}


def generic(r: Row) -> dict:
    """A row of a plain instruction file: {instruction, input?, output?} with optional answers, id, source, kind."""
    out = r.text("output", "")
    row = {"instruction": r.text("instruction"), "input": r.text("input", ""), "output": out}
    row["answers"] = r.texts("answers") if "answers" in r.data else ([out] if out.strip() else [])
    for key in ("id", "source", "kind"):
        if r.text(key, ""):
            row[key] = r.text(key)
    return row


def _nq_open(r: Row) -> dict:
    answers = r.texts("answer", nonempty=True)
    return {"instruction": _ask("Answer the following question: {q}", r.text("question")), "output": answers[0],
            "answers": answers}


def _trivia_qa(r: Row) -> dict:
    answer = r.sub("answer")
    value = answer.text("value")
    return {"id": r.text("question_id", ""), "instruction": _ask("Answer the following question: {q}", r.text("question")),
            "output": value, "answers": [value, *answer.texts("aliases")] if "aliases" in answer.data else [value]}


_PASSAGE_QA = ("Answer the question using only the passage below. If the passage does not contain the answer, "
               f'reply "{NO_ANSWER}"\n\nQuestion: {{q}}')
_DIALOGUE_QA = _PASSAGE_QA.replace("the passage below", "the passage and the conversation below")


def _squad_v2(r: Row) -> dict:
    spans = unique(r.sub("answers").texts("text"))
    title = r.text("title", "").strip()
    context = r.text("context").strip()
    return {"id": r.text("id", ""), "instruction": _ask(_PASSAGE_QA, r.text("question")),
            "input": f"Title: {title}\nPassage: {context}" if title else f"Passage: {context}",
            "output": spans[0] if spans else NO_ANSWER, "answers": spans or [NO_ANSWER]}


_QUAC_NONE = "CANNOTANSWER"


def _quac_answer(text: str) -> str:
    return NO_ANSWER if text.strip() == _QUAC_NONE else text.strip()


def _quac(r: Row) -> list[dict]:
    """One QuAC dialogue -> one row per turn; earlier turns are given as conversation history."""
    questions = r.texts("questions")
    orig = r.sub("orig_answers").texts("texts")
    if len(orig) != len(questions):
        raise r.fail("orig_answers.texts", f"has {len(orig)} entries but 'questions' has {len(questions)}")
    per_turn = r.data.get("answers") or {}
    if isinstance(per_turn, dict):  # Hub layout: {"texts": [[...] per turn], ...}
        per_turn = per_turn.get("texts") or []
    else:  # list of {"texts": [...]} per turn
        per_turn = [t.get("texts", []) if isinstance(t, dict) else [] for t in per_turn]
    turn_ids = r.data.get("turn_ids") or []
    dialogue = r.text("dialogue_id", "")
    context = r.text("context").strip().removesuffix(_QUAC_NONE).strip()
    title = " - ".join(t for t in (r.text("wikipedia_page_title", "").strip(), r.text("section_title", "").strip())
                       if t)
    background = r.text("background", "").strip()
    header = (f"Title: {title}\n" if title else "") + (f"Background: {background}\n" if background else "")
    header += f"Passage: {context}"
    rows, history = [], []
    for i, (question, answer) in enumerate(zip(questions, orig)):
        answer = _quac_answer(answer)
        extra = per_turn[i] if i < len(per_turn) and isinstance(per_turn[i], list) else []
        turn_id = turn_ids[i] if i < len(turn_ids) and isinstance(turn_ids[i], str) else f"{dialogue}_q#{i}"
        conversation = "\n\nConversation so far:\n" + "\n".join(history) if history else ""
        rows.append({"id": turn_id, "instruction": _ask(_DIALOGUE_QA, question), "input": header + conversation,
                     "output": answer, "answers": [answer, *(_quac_answer(a) for a in extra if isinstance(a, str))]})
        history.append(f"Q: {_question(question)}\nA: {answer}")
    return rows


def _boolq(r: Row) -> dict:
    answer = "yes" if r.get("answer", bool) else "no"
    return {"instruction": _ask("Read the passage below and answer the question with yes or no.\n\nQuestion: {q}",
                                r.text("question")),
            "input": f"Passage: {r.text('passage').strip()}", "output": answer, "answers": [answer]}


def _choice_row(r: Row, instruction: str, labels: list[str], texts: list[str], key: str, key_field: str) -> dict:
    if key not in labels:
        raise r.fail(key_field, f"is {key!r}, not one of the choice labels {', '.join(labels)}")
    text = texts[labels.index(key)].strip()
    return {"id": r.text("id", ""), "instruction": instruction,
            "input": "\n".join(f"{label}. {t.strip()}" for label, t in zip(labels, texts)),
            "output": f"{key}. {text}", "answers": [f"{key}. {text}", text]}


def _multiple_choice(stem_field: str) -> Callable[[Row], dict]:
    def convert(r: Row) -> dict:
        choices = r.sub("choices")
        labels, texts = choices.texts("label", nonempty=True), choices.texts("text")
        if len(labels) != len(texts):
            raise r.fail("choices", f"has {len(labels)} labels but {len(texts)} texts")
        question = r.text(stem_field)
        instruction = f"Choose the correct answer to the question below.\n\nQuestion: {question.strip()}"
        return _choice_row(r, instruction if question.strip() else "", labels, texts, r.text("answerKey").strip(),
                           "answerKey")
    return convert


def _piqa(r: Row) -> dict:
    label = r.get("label", int)
    if label not in (0, 1):
        raise r.fail("label", f"must be 0 or 1, got {label} (hidden test labels cannot be used)")
    goal = r.text("goal").strip()
    instruction = f"Choose the better way to achieve the goal below.\n\nGoal: {goal}" if goal else ""
    return _choice_row(r, instruction, ["A", "B"], [r.text("sol1"), r.text("sol2")], "AB"[label], "label")


def _ifeval(r: Row) -> dict:
    """An IFEval row {key, prompt, instruction_id_list, kwargs}: its constraints ride in ``answers``."""
    if not isinstance(r.data, dict):
        raise r.fail("prompt", "the row is not an object")
    return to_instruction_row(r.data, f"{r.origin} {r.where}")


# ------------------------------------------------------------------------------------------------ registry


@dataclass(frozen=True)
class Source:
    """Where a source lives on the Hub and how one of its rows becomes instruction rows."""

    hub_id: str
    convert: Callable[[Row], dict | list[dict]]
    config: str | None = None
    splits: dict[str, str] = field(default_factory=lambda: {"test": "validation"})  # logical -> Hub split


SOURCES: dict[str, Source] = {
    "alpaca": Source("tatsu-lab/alpaca", open_ended, splits={}),  # one Hub split, divided 8:1:1 here
    "nq_open": Source("google-research-datasets/nq_open", _nq_open),
    "trivia_qa": Source("mandarjoshi/trivia_qa", _trivia_qa, config="rc.nocontext"),
    "squad_v2": Source("rajpurkar/squad_v2", _squad_v2),
    "quac": Source("allenai/quac", _quac),
    "boolq": Source("google/boolq", _boolq),
    "piqa": Source("ybisk/piqa", _piqa),
    "openbookqa": Source("allenai/openbookqa", _multiple_choice("question_stem"), config="main", splits={}),
    "commonsense_qa": Source("tau/commonsense_qa", _multiple_choice("question")),
    # IFEval has one Hub split (541 prompts, for evaluation); a local file is split by instruction here
    "ifeval": Source(IFEVAL_HUB_ID, _ifeval, splits={"train": "train", "validation": "train", "test": "train"}),
}
FAMILIES: dict[str, tuple[str, ...]] = {
    "alpaca": ("alpaca",),
    "world_knowledge": ("nq_open", "trivia_qa"),
    "reading_comprehension": ("squad_v2", "quac", "boolq"),
    "commonsense": ("piqa", "openbookqa", "commonsense_qa"),
}
