"""Self-revision inference with a CITING student (Algorithm 1, lines 12-15).

    python recipes/infer.py --adapter outputs/citing_demo/final --rubric_path outputs/citing_demo/rubric.json \
        --dataset demo --dataset_split test --num_revisions 2 --output_dir outputs/infer_demo

--dataset takes the same values as training ('demo', a family, alpaca) or a plain JSONL of instructions.
"""

import logging

import torch

from trl import TrlParser

from citing_trl.generation import GenerationConfig
from citing_trl.models import load_model
from citing_trl.self_revision import InferenceArguments, match_rows, self_revise
from citing_trl.sft import DataArguments, load_rows


def main():
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    data_args, args = TrlParser((DataArguments, InferenceArguments)).parse_args_and_config()
    rows = match_rows(load_rows(data_args), args.rubric_path, args.embedding_model)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = load_model(args.model_name_or_path, adapter=args.adapter, device=device)
    gen = GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, seed=args.seed,
                           repetition_penalty=args.repetition_penalty, no_repeat_ngram_size=args.no_repeat_ngram_size)
    results = self_revise(model, tokenizer, rows, args.num_revisions, gen, args.output_dir)
    print(f"wrote {len(results)} instructions x {args.num_revisions + 1} answers to {args.output_dir}/responses.jsonl")


if __name__ == "__main__":
    main()
