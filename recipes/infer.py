"""Answers from any student, with optional self-revision (Algorithm 1, lines 12-15).

    # a CITING student revising itself twice
    python recipes/infer.py --adapter outputs/citing_demo/final --rubric_path outputs/citing_demo/rubric.json \
        --dataset demo --dataset_split test --num_revisions 2 --output_dir outputs/infer_demo
    # plain answers (no rubric needed) from an SFT adapter, or from the base model alone (no --adapter)
    python recipes/infer.py --adapter outputs/citing_demo/sft --dataset demo --dataset_split test \
        --num_revisions 0 --output_dir outputs/infer_sft

--dataset takes the same values as training ('demo', a family, alpaca) or a plain JSONL of instructions.
Writes <output_dir>/answers.jsonl (id, source, instruction, input, answers, response, responses), the file
recipes/evaluate.py reads. Rerunning the same command resumes; another model in the same folder is refused.
Under `accelerate launch --num_processes N` every rank answers its share of the rows into its own part file and
rank 0 joins them: the files are the ones a one-process run writes.
The flags: DataArguments, InferenceArguments and the decoding (DecodingConfig's --max_new_tokens, --batch_size,
--repetition_penalty, --no_repeat_ngram_size, --seed); see citing_trl/self_revision.py.
"""

import json
import logging
import time
from pathlib import Path

import torch
from accelerate import PartialState
from trl import TrlParser

from citing_trl.cli import run_main
from citing_trl.distributed import on_main
from citing_trl.errors import ConfigError
from citing_trl.memory import MemoryMeter, memory_table
from citing_trl.models import load_model
from citing_trl.self_revision import (
    ANSWERS_FILE,
    AnswerGenerationArguments,
    InferenceArguments,
    check_output_dir,
    match_rows,
    self_revise,
)
from citing_trl.sft import DataArguments, load_rows


def main():
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = TrlParser((DataArguments, InferenceArguments, AnswerGenerationArguments))
    data_args, args, gen_args = parser.parse_args_and_config()
    gen = gen_args.build()
    settings = {"model_name_or_path": args.model_name_or_path, "adapter": args.adapter, "dataset": data_args.dataset,
                "dataset_split": data_args.dataset_split, "max_samples": data_args.max_samples,
                "dataset_seed": data_args.dataset_seed, "max_new_tokens": gen.max_new_tokens,
                "rubric_path": args.rubric_path, "num_revisions": args.num_revisions,
                "repetition_penalty": gen.repetition_penalty, "no_repeat_ngram_size": gen.no_repeat_ngram_size}
    if args.revision_prompt != "improve":  # recorded only when set, so earlier runs' folders still resume
        settings["revision_prompt"] = args.revision_prompt
    state = PartialState(cpu=not torch.cuda.is_available())  # one process, or a rank under a launcher
    on_main(lambda: check_output_dir(args.output_dir, settings), state)  # every rank stops if rank 0 refuses
    meter, timings = MemoryMeter(), {}
    t0 = time.time()
    with meter.stage("load"):  # rows, rubric matching (with revisions), the model
        rows = load_rows(data_args)
        if len(rows) == 0:  # every rank loads the same rows, so every rank stops here alike
            raise ConfigError(f"--dataset {data_args.dataset!r} --dataset_split {data_args.dataset_split} has no rows "
                              "to answer; choose another --dataset or --dataset_split", flag="dataset")
        rows = match_rows(rows, args.rubric_path, args.embedding_model) if args.num_revisions > 0 else rows.to_list()
        model, tokenizer = load_model(args.model_name_or_path, adapter=args.adapter, device=str(state.device))
    timings["load_s"], t0 = time.time() - t0, time.time()
    with meter.stage("inference"):
        results = self_revise(model, tokenizer, rows, args.num_revisions, gen, args.output_dir, state=state,
                              prompt_style=args.revision_prompt)
    timings["inference_s"] = time.time() - t0
    if state.is_main_process:  # rank 0's own figures (each rank holds one model copy)
        summary = meter.summary()
        print(memory_table(summary["stages"], timings, summary["process_peak_rss_bytes"]))
        (Path(args.output_dir) / "memory.json").write_text(json.dumps({**summary, "timings": timings}, indent=2) + "\n")
        print(f"wrote {len(results)} instructions x {args.num_revisions + 1} answers to {args.output_dir}/"
              f"{ANSWERS_FILE}")
    state.wait_for_everyone()
    if state.num_processes > 1:
        state.destroy_process_group()  # leave gloo/NCCL cleanly (else a rank can abort in teardown)


if __name__ == "__main__":
    run_main(main)  # a user error (bad flag, missing file, bad row, another run's folder) prints one line, exit 2
