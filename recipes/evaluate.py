"""Evaluate answers files: gold metrics, Table 1 (reference vs each other system), Table 2 (consecutive rounds
and self-revision steps), Figure 2 and the judge's usage (paper §4.1, §4.4-4.5).

    python recipes/evaluate.py --answers citing=outputs/infer_citing/answers.jsonl sft=outputs/infer_sft/answers.jsonl \
        --reference citing --output_dir outputs/eval --judge_backend openai --judge_model gpt-4o \
        --judge_base_url https://api.openai.com/v1

`--judge_backend none` writes the gold metrics only; `local` judges with an in-process model (default: the
embedded SmolLM2-135M). Rerunning the same command reads every verdict back from the judge cache.
"""

import logging
import sys

from trl import TrlParser

from citing_trl.evaluation.reports import AnswersError
from citing_trl.evaluation.runner import EvaluationArguments, print_summary, run_evaluation
from citing_trl.teacher import TeacherError


def main():
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    (args,) = TrlParser((EvaluationArguments,)).parse_args_and_config()
    try:
        summary = run_evaluation(args)
    except (ValueError, AnswersError, TeacherError) as err:
        print(f"evaluate.py: error: {err}", file=sys.stderr)
        sys.exit(1 if isinstance(err, TeacherError) else 2)
    print_summary(summary)


if __name__ == "__main__":
    main()
