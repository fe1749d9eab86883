"""Every prompt the suite sends to a model, in one place.

CITING, the baselines and the judge all build their prompts here, so a change of wording is a change
in one file. The wording is the project's own; the *structure* of each prompt follows the paper
(arXiv 2310.02527): the rubric-design request of §3.2 and the revision prompt pr(x, c, r) of §3.3
(instruction, response, criteria, then the revised response).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

# --------------------------------------------------------------------------------------------------
# Plain instruction following (SFT, Eq. 3; baselines; the student's first answer r(0))
# --------------------------------------------------------------------------------------------------


def instruction_text(instruction: str, input: str = "") -> str:
    """The user turn for an instruction and its optional input (passage, choices, context)."""
    instruction = instruction.strip()
    input = (input or "").strip()
    if not input:
        return instruction
    return f"{instruction}\n\n{input}"


def instruction_messages(instruction: str, input: str = "") -> list[dict]:
    """Chat messages that ask the student to answer an instruction."""
    return [{"role": "user", "content": instruction_text(instruction, input)}]


# --------------------------------------------------------------------------------------------------
# Revision prompt pr(x, c, r) (§3.3, Eq. 4; Algorithm 1 lines 9, 10 and 14)
# --------------------------------------------------------------------------------------------------

REVISION_HEADER = (
    "You are given a task, a draft answer to it, and the standards that separate a strong answer "
    "from a weak one for this kind of task. Rewrite the draft so that it meets the standards: keep "
    "what is correct, fix what is wrong, and add what is missing. Reply with the improved answer only."
)


# The same pr(x, c, r) with a header that says a right draft is returned unchanged. The student learns and
# self-revises with one of the two (``--revision_prompt``); the teacher's plain prompt follows the same choice.
KEEP_RIGHT_REVISION_HEADER = (
    "You are given a task, a draft answer to it, and the standards that separate a strong answer "
    "from a weak one for this kind of task. If the draft already answers the task correctly, reply with the "
    "draft exactly as it is, word for word. Only if it is wrong or incomplete, rewrite it so that it meets the "
    "standards. Reply with the answer only."
)

REVISION_HEADERS = {"improve": REVISION_HEADER, "keep_right": KEEP_RIGHT_REVISION_HEADER}


def format_criteria(criteria: str | Sequence[str]) -> str:
    if isinstance(criteria, str):
        return criteria.strip()
    return "\n".join(f"- {c.strip()}" for c in criteria if c and c.strip())


def revision_prompt(instruction: str, input: str, criteria: str | Sequence[str], response: str,
                    style: str = "improve") -> str:
    """pr(x, c, r): the text that both the teacher (to revise) and the student (to learn and to
    self-revise) receive. Sections appear in the paper's order: instruction, response, criteria. ``style``
    picks the header (:data:`REVISION_HEADERS`): ``improve`` (keep, fix, add) or ``keep_right`` (a right draft
    is returned unchanged)."""
    if style not in REVISION_HEADERS:
        raise ValueError(f"unknown revision prompt {style!r}; expected one of {sorted(REVISION_HEADERS)}")
    return (
        f"{REVISION_HEADERS[style]}\n\n"
        f"### Task\n{instruction_text(instruction, input)}\n\n"
        f"### Draft answer\n{response.strip()}\n\n"
        f"### Standards\n{format_criteria(criteria)}\n\n"
        f"### Improved answer"
    )


def revision_messages(instruction: str, input: str, criteria: str | Sequence[str], response: str,
                      style: str = "improve") -> list[dict]:
    return [{"role": "user", "content": revision_prompt(instruction, input, criteria, response, style)}]


# --------------------------------------------------------------------------------------------------
# Reference-guided revision (beyond the paper; teacher only, never the student's prompt)
# --------------------------------------------------------------------------------------------------

REFERENCE_REVISION_HEADER = (
    "You are given a task, a draft answer to it, a reference answer that is known to be correct, and the "
    "standards that separate a strong answer from a weak one for this kind of task. Rewrite the draft so "
    "that what it answers agrees with the reference and the answer meets the standards. Keep whatever in "
    "the draft is already right, change what disagrees with the reference, and do not talk about the draft "
    "or the reference. Reply with the improved answer only."
)


def format_reference(answers: str | Sequence[str]) -> str:
    """The gold answer(s) as the teacher sees them: the first, then any other accepted forms."""
    items = [answers] if isinstance(answers, str) else [a for a in answers if a and a.strip()]
    if not items:
        raise ValueError("reference-guided revision needs at least one gold answer")
    first, rest = items[0].strip(), [a.strip() for a in items[1:] if a.strip() != items[0].strip()]
    return first + (f"\n(also accepted: {'; '.join(rest)})" if rest else "")


def reference_revision_prompt(instruction: str, input: str, criteria: str | Sequence[str], response: str,
                              answers: str | Sequence[str]) -> str:
    """The teacher's revision prompt when a gold answer is known: pr(x, c, r) plus the reference. The student
    is never shown this prompt; it learns from pr(x, c, r) -> revision (:func:`revision_prompt`)."""
    return (
        f"{REFERENCE_REVISION_HEADER}\n\n"
        f"### Task\n{instruction_text(instruction, input)}\n\n"
        f"### Draft answer\n{response.strip()}\n\n"
        f"### Reference answer (correct)\n{format_reference(answers)}\n\n"
        f"### Standards\n{format_criteria(criteria)}\n\n"
        f"### Improved answer"
    )


def reference_revision_messages(instruction: str, input: str, criteria: str | Sequence[str], response: str,
                                answers: str | Sequence[str]) -> list[dict]:
    return [{"role": "user", "content": reference_revision_prompt(instruction, input, criteria, response, answers)}]


# --------------------------------------------------------------------------------------------------
# Rubric design (§3.2, Algorithm 1 line 5)
# --------------------------------------------------------------------------------------------------

RUBRIC_DESIGN_SYSTEM = (
    "You design grading rubrics for instruction-following assistants. You always answer with a "
    "single JSON object and nothing else."
)


def rubric_design_prompt(instructions: Sequence[str], max_categories: int) -> str:
    """Ask the teacher to group numbered instructions into at most ``max_categories`` kinds of task and to
    state, for each kind, what a good and what a bad answer looks like."""
    listing = "\n".join(f"{i + 1}. {json.dumps(text, ensure_ascii=False)}" for i, text in enumerate(instructions))
    schema = {
        "categories": [
            {
                "name": "short name of the kind of task",
                "good": ["what a strong answer to this kind of task does", "..."],
                "bad": ["what a weak answer to this kind of task does", "..."],
                "members": [1, 4],
            }
        ]
    }
    return (
        f"Below are {len(instructions)} numbered instructions. Group them by the kind of task they ask "
        f"for, using at most {max_categories} groups, and put every instruction in exactly one group. "
        "For each group, write the criteria a grader should use: what a good answer does and what a bad "
        "answer does.\n\n"
        f"Instructions:\n{listing}\n\n"
        "Answer with JSON of exactly this shape (members are the instruction numbers):\n"
        f"{json.dumps(schema, indent=2)}"
    )


def rubric_design_messages(instructions: Sequence[str], max_categories: int) -> list[dict]:
    return [
        {"role": "system", "content": RUBRIC_DESIGN_SYSTEM},
        {"role": "user", "content": rubric_design_prompt(instructions, max_categories)},
    ]


def rubric_repair_messages(original: list[dict], bad_output: str, problem: str) -> list[dict]:
    """Continue the rubric-design conversation: the teacher sees its own unusable answer and why it failed,
    with the original instructions still in context, so it can fix the format or finish a cut-off answer."""
    return [
        *original,
        {"role": "assistant", "content": bad_output},
        {
            "role": "user",
            "content": (
                f"That answer could not be used: {problem}\n\n"
                "Reply again with the complete answer as one valid JSON object with a top-level key "
                "\"categories\"; every category needs \"name\", \"good\", \"bad\" and \"members\" (the "
                "instruction numbers). No text outside the JSON."
            ),
        },
    ]


# --------------------------------------------------------------------------------------------------
# Pairwise judge (§4.1): articulate, in-depth, comprehensive
# --------------------------------------------------------------------------------------------------

JUDGE_ASPECTS: dict[str, str] = {
    "articulate": (
        "How clear and readable the answer is: correct grammar and sentence structure, ideas that follow "
        "one another logically, and technical terms avoided or explained."
    ),
    "in-depth": (
        "How deeply the answer treats the question: it covers the central ideas, brings in subtler points "
        "or less obvious facts, and shows understanding beyond the surface."
    ),
    "comprehensive": (
        "How broad the answer is: it looks at the question from several sides, includes different "
        "perspectives, and leaves out no important sub-topic."
    ),
}


def judge_prompt(instruction: str, input: str, answer_a: str, answer_b: str, aspect: str) -> str:
    if aspect not in JUDGE_ASPECTS:
        raise ValueError(f"unknown judge aspect {aspect!r}; expected one of {sorted(JUDGE_ASPECTS)}")
    return (
        f"Compare two answers to the same task on one aspect only: {aspect}.\n"
        f"{aspect.capitalize()} means: {JUDGE_ASPECTS[aspect]}\n\n"
        f"### Task\n{instruction_text(instruction, input)}\n\n"
        f"### Answer A\n{answer_a.strip()}\n\n"
        f"### Answer B\n{answer_b.strip()}\n\n"
        'Reply with JSON only: {"winner": "A"} if A is better on this aspect, {"winner": "B"} if B is '
        'better, or {"winner": "tie"} if neither is better.'
    )


def judge_messages(instruction: str, input: str, answer_a: str, answer_b: str, aspect: str) -> list[dict]:
    return [{"role": "user", "content": judge_prompt(instruction, input, answer_a, answer_b, aspect)}]


def joint_judge_prompt(instruction: str, input: str, answer_a: str, answer_b: str,
                       aspects: Sequence[str] = tuple(JUDGE_ASPECTS)) -> str:
    """One request that compares two answers on every aspect at once and asks for one small JSON object
    (a third of the calls of :func:`judge_prompt` for the paper's three aspects)."""
    unknown = [a for a in aspects if a not in JUDGE_ASPECTS]
    if unknown or not aspects:
        raise ValueError(f"unknown judge aspect(s) {unknown}; expected some of {sorted(JUDGE_ASPECTS)}")
    definitions = "\n".join(f"- {a}: {JUDGE_ASPECTS[a]}" for a in aspects)
    example = json.dumps({a: "A" if i % 3 == 0 else ("B" if i % 3 == 1 else "tie") for i, a in enumerate(aspects)})
    return (
        "Compare two answers to the same task. Judge each aspect below on its own; the order in which the "
        "answers are shown says nothing about their quality.\n"
        f"{definitions}\n\n"
        f"### Task\n{instruction_text(instruction, input)}\n\n"
        f"### Answer A\n{answer_a.strip()}\n\n"
        f"### Answer B\n{answer_b.strip()}\n\n"
        f'For every aspect write "A" if answer A is better, "B" if answer B is better, or "tie". Reply with one '
        f"JSON object and nothing else, with exactly these keys, for example:\n{example}"
    )


def joint_judge_messages(instruction: str, input: str, answer_a: str, answer_b: str,
                         aspects: Sequence[str] = tuple(JUDGE_ASPECTS)) -> list[dict]:
    return [{"role": "user", "content": joint_judge_prompt(instruction, input, answer_a, answer_b, aspects)}]


def judge_repair_messages(conversation: list[dict], bad_output: str, aspects: Sequence[str]) -> list[dict]:
    """Ask the judge again after a reply that could not be read: the conversation continues with its own
    reply and a short reminder of the format, so the request (and its cache key) differs from the first."""
    if len(aspects) == 1 and aspects[0] == "winner":
        shape = '{"winner": "A"}, {"winner": "B"} or {"winner": "tie"}'
    else:
        shape = "{" + ", ".join(f'"{a}": "A" | "B" | "tie"' for a in aspects) + "}"
    return [
        *conversation,
        {"role": "assistant", "content": bad_output},
        {"role": "user", "content": f"That reply could not be read. Answer again with JSON only, of the form {shape}."},
    ]
