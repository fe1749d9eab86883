"""Evaluate answers files: gold metrics with chance levels, paired differences against the reference (paired
bootstrap CI, exact McNemar test, fixed/broken), Table 1 (reference vs each other system), Table 2 (consecutive
rounds and self-revision steps), Figure 2 and the judge's usage (paper §4.1, §4.4-4.5). The printout leads with
the offline comparison (gold, else token overlap with the reference answers) and puts the judge's tables below.

    python recipes/evaluate.py --answers citing=outputs/infer_citing/answers.jsonl sft=outputs/infer_sft/answers.jsonl \
        --reference citing --output_dir outputs/eval --judge_backend openai --judge_model gpt-4o \
        --judge_base_url https://api.openai.com/v1

`--judge_backend none` writes the gold metrics only; `local` judges with an in-process model (default: the
embedded SmolLM2-135M). Rerunning the same command reads every verdict back from the judge cache. The flags:
EvaluationArguments and --judge_* (the judge's TeacherConfig), see citing_trl/evaluation/config.py.
"""

import logging

from trl import TrlParser

from citing_trl.cli import run_main
from citing_trl.evaluation.config import EvaluationArguments, JudgeArguments, judge_config
from citing_trl.evaluation.runner import print_summary, run_evaluation


def main():
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args, judge_args = TrlParser((EvaluationArguments, JudgeArguments)).parse_args_and_config()
    print_summary(run_evaluation(args, judge_config(args, judge_args)))


if __name__ == "__main__":
    run_main(main, prog="evaluate.py")  # a user error (bad flag, bad answers file, silent judge): one line, exit 2
