"""Self-revision inference (Alg. 1 lines 12-15) and pushing a run to the Hub (up to the network call)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from citing_trl.generation import DecodingConfig
from citing_trl.hub import push_run
from citing_trl.jsonl import read_jsonl
from citing_trl.models import load_model
from citing_trl.self_revision import self_revise
from tests.conftest import REPO


def rows():
    return [
        {"id": f"q{i}", "instruction": f"Describe object {i}.", "input": "", "criteria": "- Be specific."}
        for i in range(5)
    ]


def test_self_revise_saves_every_step_and_resumes(tmp_path, tiny_model_dir):
    model, tok = load_model(str(tiny_model_dir))
    gen = DecodingConfig(max_new_tokens=6, batch_size=2, do_sample=True, temperature=1.0, show_progress=False)
    results = self_revise(model, tok, rows(), num_revisions=2, gen_config=gen, output_dir=tmp_path)
    assert [len(r["responses"]) for r in results] == [3] * 5
    for j in range(3):
        assert len(read_jsonl(tmp_path / f"step_{j}.jsonl")) == 5
    saved = read_jsonl(tmp_path / "answers.jsonl")
    assert [r["id"] for r in saved] == [r["id"] for r in rows()]
    # an interrupted step 2 (torn last line) is completed without regenerating steps 0-1
    step2 = (tmp_path / "step_2.jsonl").read_text().splitlines()
    (tmp_path / "step_2.jsonl").write_text("\n".join(step2[:2]) + "\n" + step2[2][:5])
    mtimes = {j: (tmp_path / f"step_{j}.jsonl").stat().st_mtime_ns for j in (0, 1)}
    again = self_revise(model, tok, rows(), num_revisions=2, gen_config=gen, output_dir=tmp_path)
    assert {j: (tmp_path / f"step_{j}.jsonl").stat().st_mtime_ns for j in (0, 1)} == mtimes
    assert [r["responses"][:2] for r in again] == [r["responses"][:2] for r in results]
    assert len(read_jsonl(tmp_path / "step_2.jsonl")) == 5


@pytest.mark.slow
def test_infer_recipe_on_plain_jsonl(tmp_path, tiny_model_dir):
    data = tmp_path / "questions.jsonl"
    data.write_text("".join(json.dumps({"instruction": q}) + "\n" for q in
                            ["What is the boiling point of water?", "Write a short poem about snow.",
                             "How do I change a bicycle tyre?"]))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "recipes" / "infer.py"), "--model_name_or_path", str(tiny_model_dir),
         "--dataset", str(data), "--num_revisions", "1", "--max_new_tokens", "4", "--output_dir", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = read_jsonl(tmp_path / "out" / "answers.jsonl")
    assert len(out) == 3 and all(len(r["responses"]) == 2 and r["criteria"] for r in out)
    categories = {r["instruction"]: r["category"] for r in out}
    assert len(set(categories.values())) >= 2, categories  # factual / creative / practical differ


class FakeApi:
    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", repo_id, kw.get("repo_type")))

    def upload_folder(self, repo_id, folder_path, **kw):
        self.calls.append(("upload_folder", repo_id, sorted(os.listdir(folder_path))))

    def upload_file(self, path_or_fileobj, path_in_repo, repo_id, **kw):
        self.calls.append(("upload_file", repo_id, path_in_repo))


def test_push_run_uploads_final_adapter_and_revisions(tmp_path):
    final = tmp_path / "final"
    final.mkdir()
    (final / "adapter_config.json").write_text("{}")
    (final / "README.md").write_text("card")
    for k in range(2):
        (tmp_path / f"round_{k}").mkdir()
        (tmp_path / f"round_{k}" / "revisions.jsonl").write_text("{}\n")
    api = FakeApi()
    uploaded = push_run(tmp_path, "me/citing-demo", push_revisions=True, api=api)
    assert ("upload_folder", "me/citing-demo", ["README.md", "adapter_config.json"]) in api.calls
    assert ("create_repo", "me/citing-demo-revisions", "dataset") in api.calls
    assert [c[2] for c in api.calls if c[0] == "upload_file"] == ["round_0.jsonl", "round_1.jsonl"]
    assert len(uploaded) == 3


def test_push_run_refuses_unfinished_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="no adapter"):
        push_run(tmp_path, "me/x", api=FakeApi())
