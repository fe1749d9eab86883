"""Run under a 2-process launcher by tests/test_distributed.py: each rank checks that ``output_dir`` is shared
(:func:`citing_trl.distributed.check_shared_output_dir`) and writes what it found to ``result.<rank>.json``.

    python tests/helpers/shared_dir_check.py BASE [per-rank]
"""

import json
import sys
from pathlib import Path

import torch
from accelerate import PartialState

from citing_trl.distributed import SharedDirError, check_shared_output_dir


def main() -> None:
    base = Path(sys.argv[1])
    per_rank = len(sys.argv) > 2 and sys.argv[2] == "per-rank"
    state = PartialState(cpu=not torch.cuda.is_available())  # gloo ranks on a CPU box (as TrainingArguments does)
    # "per-rank" stands in for nodes whose output_dir is each on a local disk: same code, different folders
    target = base / f"local-disk-{state.process_index}" if per_rank else base / "shared"
    try:
        check_shared_output_dir(target)
        result = {"rank": state.process_index, "ok": True, "dir": str(target.resolve())}
    except SharedDirError as err:
        result = {"rank": state.process_index, "ok": False, "error": str(err)}
    (base / f"result.{state.process_index}.json").write_text(json.dumps(result))
    state.wait_for_everyone()
    # join the gloo process group's threads before the interpreter exits: left to shutdown, a rank can die in
    # C++ teardown ("terminate called without an active exception", SIGABRT) after its work is done
    state.destroy_process_group()


if __name__ == "__main__":
    main()
