"""CITING: curriculum instruction tuning with a teacher LLM (arXiv 2310.02527, Algorithm 1).

    accelerate launch recipes/citing.py --config recipes/configs/citing_demo.yaml

Rerunning the same command resumes an interrupted run; see citing_trl/pipeline.py for the output layout.
The flags: DataArguments, CitingConfig (training), ModelConfig, CitingArguments (the curriculum), --teacher_*
(TeacherConfig) and --rollout_* (the student's DecodingConfig).
"""

import logging

from trl import ModelConfig, TrlParser

from citing_trl.citing_config import CitingArguments, CitingConfig, RolloutArguments, TeacherArguments
from citing_trl.cli import run_main
from citing_trl.hub import push_run
from citing_trl.pipeline import CitingPipeline
from citing_trl.sft import DataArguments


def main():
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = TrlParser((DataArguments, CitingConfig, ModelConfig, CitingArguments, TeacherArguments, RolloutArguments))
    data_args, training_args, model_args, citing_args, teacher_args, rollout_args = parser.parse_args_and_config()
    push, training_args.push_to_hub = training_args.push_to_hub, False  # rounds never push; the run does, once
    pipeline = CitingPipeline(data_args, training_args, model_args, citing_args, teacher_args.build(),
                              rollout_args.build())
    final = pipeline.run()
    if pipeline.state.is_main_process:
        print(f"CITING finished: final adapter in {final}")
        if push:
            repo = training_args.hub_model_id or final.parent.name
            push_run(training_args.output_dir, repo, private=training_args.hub_private_repo,
                     push_revisions=citing_args.push_revisions)


if __name__ == "__main__":
    run_main(main)  # a user error (bad flag, missing file, bad row, silent teacher) prints one line, exit 2
