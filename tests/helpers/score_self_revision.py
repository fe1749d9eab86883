"""Gold accuracy of self-revision steps r(0)..r(M) with 95% bootstrap CIs and fix/break between steps
(the measurement of issue 13; manual use, not a test).

    python -m tests.helpers.score_self_revision --data "<load_instructions spec>" --split test \
        --run SFT=outputs/infer_sft --run CITING=outputs/infer_citing

Each ``--run NAME=DIR`` is a ``recipes/infer.py`` output folder (``answers.jsonl``: id, responses
[r(0)..r(M)]); rows are joined by id to the data spec's rows for ``source``/``answers``/``input``. Correctness
is C1's ``is_correct`` (accuracy for yes/no and multiple choice, ``answer_in_response`` for open QA).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

from citing_trl.data import load_instructions
from citing_trl.evaluation.gold import fix_break, is_correct
from citing_trl.evaluation.stats import bootstrap_ci
from citing_trl.jsonl import read_jsonl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--run", action="append", required=True, help="NAME=DIR of recipes/infer.py output")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    gold = {r["id"]: r for r in load_instructions(args.data, split=args.split).to_list()}
    sources = sorted({r["source"] for r in gold.values()})
    figures = {}
    print("| answers | " + " | ".join(sources) + " | all (95% CI) |")
    print("|---|" + "---|" * (len(sources) + 1))
    for spec in args.run:
        name, _, folder = spec.partition("=")
        results = read_jsonl(f"{folder}/answers.jsonl")
        steps = len(results[0]["responses"])
        correct = [[is_correct(gold[r["id"]]["source"], r["responses"][j], gold[r["id"]]["answers"],
                               gold[r["id"]].get("input") or "") for r in results] for j in range(steps)]
        for j in range(steps):
            per = defaultdict(list)
            for r, c in zip(results, correct[j]):
                per[gold[r["id"]]["source"]].append(float(bool(c)))
            every = [x for s in sources for x in per[s]]
            low, high = bootstrap_ci(every, n_boot=2000, seed=0)
            cells = [f"{int(sum(per[s]))}/{len(per[s])}" for s in sources]
            print(f"| {name} r({j}) | " + " | ".join(cells) + f" | {sum(every) / len(every):.3f} [{low:.3f}, {high:.3f}] |")
            figures[f"{name} r({j})"] = {"per_source": {s: [sum(per[s]), len(per[s])] for s in sources},
                                         "all": sum(every) / len(every), "ci95": [low, high]}
            if j:
                fb = fix_break(correct[j - 1], correct[j])
                changed = sum(a != b for a, b in zip((r["responses"][j - 1] for r in results),
                                                     (r["responses"][j] for r in results)))
                figures[f"{name} r({j - 1})->r({j})"] = {**fb, "changed_answers": changed}
    print()
    print("| step | wrong→right | right→wrong | right→right | wrong→wrong | answers changed |")
    print("|---|---|---|---|---|---|")
    for key, fb in figures.items():
        if "->" in key:
            print(f"| {key} | {fb['wrong_to_right']} | {fb['right_to_wrong']} | {fb['right_to_right']} | "
                  f"{fb['wrong_to_wrong']} | {fb['changed_answers']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
