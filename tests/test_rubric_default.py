"""The built-in rubric is a data file (citing_trl/rubric/default_rubric.json) that loads to exactly the rubric the
code used to build.

The expected value below is the in-code definition from ``citing_trl/rubric_design.py`` as it was before the
rubric moved into its own package (copied verbatim, names prefixed with ``_OLD``), so any edit of the data file that
changes the rubric fails here.
"""

from __future__ import annotations

import fnmatch
import json
from importlib import resources
from pathlib import Path

import pytest

from citing_trl.rubric import Category, Rubric, default_rubric

REPO = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------ captured from rubric_design.py

_OLD_DEFAULT_RUBRIC_DATE = "2026-11-23"

_OLD_DEFAULT_CATEGORIES: list[dict] = [
    {
        "name": "Factual knowledge",
        "good": [
            "States the correct fact directly, in the first sentence.",
            "Names, dates, numbers and units are exact and agree with well-established sources.",
            "Stays short: at most a line of context that helps the reader.",
            "Says plainly when there is no single accepted answer or when the question rests on a false premise.",
        ],
        "bad": [
            "Gets the fact wrong, or hedges between several answers.",
            "Buries the answer under long background or unrelated trivia.",
            "Invents details, figures or sources to sound authoritative.",
            "Answers a different question from the one asked.",
        ],
        "members": [
            "What is the capital city of Australia?",
            "Who painted the ceiling of the Sistine Chapel?",
            "In which year did the Berlin Wall fall?",
            "What is the chemical symbol for gold?",
            "How many bones are there in the adult human body?",
            "Name the longest river in South America.",
            "Which planet in our solar system has the most moons?",
            "What language is mainly spoken in Brazil?",
            "Who wrote the novel One Hundred Years of Solitude?",
            "What is the boiling point of water at sea level in Fahrenheit?",
            "Which country has the largest population in Africa?",
            "Name three countries that share a border with Germany.",
        ],
    },
    {
        "name": "Explanation/definition",
        "good": [
            "Opens with a plain one- or two-sentence statement of what the thing is or why it happens.",
            "Builds the explanation step by step, from the basic idea to the details.",
            "Uses everyday words and explains any technical term it cannot avoid.",
            "Gives a concrete example or analogy that makes the idea easy to grasp.",
            "Is accurate and complete enough that a newcomer could restate it in their own words.",
        ],
        "bad": [
            "Defines a term with itself or with equally obscure jargon.",
            "Is a loose heap of facts with no logical order.",
            "Simplifies so much that the explanation becomes wrong.",
            "Wanders into tangents that do not help understanding.",
        ],
        "members": [
            "Explain how vaccines train the immune system.",
            "What does the term opportunity cost mean?",
            "Describe the process of photosynthesis in simple terms.",
            "Define machine learning and give an example.",
            "Explain why the sky looks blue during the day.",
            "What is the difference between weather and climate?",
            "Explain the concept of supply and demand.",
            "How does a blockchain keep its records secure?",
            "Describe what happens during a solar eclipse.",
            "Explain the meaning of the idiom 'break the ice'.",
            "What is inflation and why does it happen?",
        ],
    },
    {
        "name": "Analysis/evaluation",
        "good": [
            "Identifies the key factors, sides or criteria before passing judgement.",
            "Backs every claim with reasons, evidence or examples.",
            "Weighs strengths against weaknesses and makes comparisons explicit.",
            "Acknowledges trade-offs, uncertainty and other reasonable views.",
            "Ends with a clear conclusion or recommendation that follows from the reasoning.",
        ],
        "bad": [
            "Gives an opinion with no reasons.",
            "Looks at one side only or ignores obvious counter-arguments.",
            "Describes or summarises instead of analysing.",
            "Reaches a conclusion that does not follow from what was said.",
        ],
        "members": [
            "Compare the advantages and disadvantages of working from home.",
            "Evaluate the argument that social media does more harm than good.",
            "Analyze the main causes of the 2008 financial crisis.",
            "Assess the strengths and weaknesses of the following business plan.",
            "Which is the better first language for a beginner programmer, Python or Java? Justify your answer.",
            "Critique the following paragraph for clarity and logic.",
            "Analyze the tone and mood of the given poem.",
            "What are the likely long-term effects of raising the minimum wage?",
            "Identify the logical fallacy in this statement and explain why the reasoning is flawed.",
            "Compare renewable and fossil energy sources in terms of cost and environmental impact.",
            "Is it ethical for companies to collect user data for targeted advertising? Discuss.",
        ],
    },
    {
        "name": "Creative generation",
        "good": [
            "Respects every stated constraint: form, length, number of items, topic and tone.",
            "Is original and specific rather than generic or cliched.",
            "Has a coherent shape: a story with an arc, a poem with rhythm, a list of clearly distinct items.",
            "Uses vivid language that suits the intended audience.",
        ],
        "bad": [
            "Ignores the requested form, count or theme.",
            "Leans on stock phrases and predictable ideas.",
            "Repeats itself or pads a list with near-duplicates.",
            "Is flat or incoherent, or stops abruptly.",
        ],
        "members": [
            "Write a short story about a robot who learns to paint.",
            "Compose a haiku about autumn rain.",
            "Come up with five names for a new coffee shop.",
            "Write a catchy slogan for a reusable water bottle.",
            "Generate a list of ideas for a child's birthday party.",
            "Write a poem about the ocean at night.",
            "Create a dialogue between a detective and a nervous suspect.",
            "Invent a new holiday and describe how people celebrate it.",
            "Write the opening paragraph of a fantasy novel.",
            "Brainstorm three unusual uses for an old umbrella.",
            "Write a limerick about a forgetful cat.",
        ],
    },
    {
        "name": "Practical application",
        "good": [
            "Carries out exactly the requested operation (calculation, conversion, translation, rewrite, code, "
            "classification) and gets it right.",
            "Shows the working when the task involves arithmetic or several steps.",
            "Gives the result in the format asked for, easy to find.",
            "Keeps the meaning and content of any given input unless told to change them.",
            "Gets the details right: units, edge cases, spelling of names.",
        ],
        "bad": [
            "Produces a wrong result or an arithmetic slip.",
            "Describes how one would do the task instead of doing it.",
            "Changes, drops or adds content the task did not ask to change.",
            "Ignores the required output format or language.",
        ],
        "members": [
            "Convert 25 degrees Celsius to Fahrenheit.",
            "Translate 'Where is the train station?' into Spanish.",
            "Calculate the area of a circle with a radius of 4 cm.",
            "Rewrite the following sentence in the passive voice.",
            "Sort these numbers in ascending order: 42, 7, 19, 3, 88.",
            "Write a Python function that reverses a string.",
            "Correct the grammar in this sentence: 'She don't like apples.'",
            "Summarize the following article in two sentences.",
            "Classify the following animals as mammals or reptiles: snake, whale, lizard, bat.",
            "Edit this email so that it sounds more formal.",
            "Identify the verbs in the following sentence.",
            "Extract all the dates mentioned in the text below.",
        ],
    },
]


def _old_default_rubric() -> Rubric:
    """default_rubric() exactly as rubric_design.py built it."""
    cats = [
        Category(name=c["name"], good=list(c["good"]), bad=list(c["bad"]), members=list(c["members"]))
        for c in _OLD_DEFAULT_CATEGORIES
    ]
    return Rubric(categories=cats, teacher_model=None, created=_OLD_DEFAULT_RUBRIC_DATE, source="default")



# ------------------------------------------------------------------------------ tests


def test_default_rubric_equals_the_old_in_code_definition():
    new, old = default_rubric(), _old_default_rubric()
    assert new == old
    assert new.to_dict() == old.to_dict()
    assert [c.name for c in new.categories] == ["Factual knowledge", "Explanation/definition", "Analysis/evaluation",
                                                "Creative generation", "Practical application"]
    assert new.source == "default" and new.teacher_model is None and new.created == "2026-11-23" and new.details == {}


def test_default_rubric_is_a_fresh_object_each_call():
    first = default_rubric()
    first.categories[0].members.append("changed")
    first.categories.pop()
    assert default_rubric() == _old_default_rubric()


def test_default_rubric_file_is_a_saved_rubric(tmp_path):
    """The data file has the format Rubric.save writes, so it can be copied and edited as a user's rubric.json."""
    text = resources.files("citing_trl.rubric").joinpath("default_rubric.json").read_text(encoding="utf-8")
    assert json.loads(text) == _old_default_rubric().to_dict()
    saved = default_rubric().save(tmp_path / "rubric.json")
    assert saved.read_text(encoding="utf-8") == text
    assert Rubric.load(saved) == default_rubric()


def test_default_rubric_file_is_package_data():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["citing_trl"]
    assert any(fnmatch.fnmatch("rubric/default_rubric.json", p) for p in patterns), patterns


def test_default_rubric_categories_are_category_objects():
    assert all(isinstance(c, Category) and c.members and (c.good or c.bad) for c in default_rubric().categories)
