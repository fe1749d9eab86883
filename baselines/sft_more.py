"""sft_more, the compute-matched control: continue SFT from the SFT adapter on the gold answers of the instructions a
CITING run's rounds trained on, for exactly as many optimizer steps (citing_trl/baselines/sft_more.py).

    python baselines/sft_more.py --config baselines/configs/sft_more_demo.yaml --citing_run outputs/citing_qa_demo
"""

import logging

from trl import ModelConfig, TrlParser

from citing_trl.baselines.common import BaselineArguments
from citing_trl.baselines.sft_more import SFTMoreConfig, run_sft_more
from citing_trl.cli import run_main
from citing_trl.sft import DataArguments, load_rows


def main():
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    data_args, base_args, args, model_args = TrlParser(
        (DataArguments, BaselineArguments, SFTMoreConfig, ModelConfig)).parse_args_and_config()
    rows = load_rows(data_args).to_list() if args.gold_from == "dataset" else None
    out = run_sft_more(args, model_args, base_args.citing_run, sft_adapter=base_args.sft_adapter, dataset_rows=rows)
    print(f"sft_more adapter saved to {out}; steps and tokens against CITING in {out}/stats.json")


if __name__ == "__main__":
    run_main(main)  # a user error (bad flag, missing or unfinished --citing_run) prints one line, exit 2
