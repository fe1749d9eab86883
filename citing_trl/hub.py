"""Pushing a finished run to the Hugging Face Hub: the final adapter with its model card, and optionally each
round's revision data set. Only file names and public settings are sent; API keys never are."""

from __future__ import annotations

import logging
from pathlib import Path

from citing_trl.run_layout import round_dirs

logger = logging.getLogger(__name__)

SECRET_HINTS = ("api_key", "apikey", "token", "secret", "password")


def push_run(output_dir: str | Path, repo_id: str, private: bool | None = None, push_revisions: bool = False,
             api=None) -> list[str]:
    """Upload ``output_dir/final`` (adapter + README.md) to ``repo_id``; with ``push_revisions`` also each
    ``round_<k>/revisions.jsonl`` as a data set repo ``<repo_id>-revisions``. Returns what was uploaded."""
    from huggingface_hub import HfApi

    api = api or HfApi()
    out = Path(output_dir)
    final = out / "final"
    if not (final / "adapter_config.json").exists():
        raise FileNotFoundError(f"{final} holds no adapter: run the pipeline to the end before pushing")
    uploaded = []
    api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(final), commit_message="CITING: final adapter",
                      ignore_patterns=["checkpoint-*", "*.pt", "training_args.bin"])
    uploaded.append(f"model:{repo_id}")
    if push_revisions:
        data_repo = f"{repo_id}-revisions"
        api.create_repo(data_repo, repo_type="dataset", private=private, exist_ok=True)
        for rev in (rdir / "revisions.jsonl" for rdir in round_dirs(out) if (rdir / "revisions.jsonl").is_file()):
            api.upload_file(path_or_fileobj=str(rev), path_in_repo=f"{rev.parent.name}.jsonl", repo_id=data_repo,
                            repo_type="dataset", commit_message=f"CITING revisions: {rev.parent.name}")
            uploaded.append(f"dataset:{data_repo}/{rev.parent.name}.jsonl")
    return uploaded
