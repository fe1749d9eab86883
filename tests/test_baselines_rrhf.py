"""RRHF: the loss equals a hand computation on 2 prompts x 3 candidates (own-length normalisation, SFT term on
each prompt's best candidate), skips are counted by row, and candidates are built from samples + gold."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from citing_trl.baselines.common import SamplingArguments
from citing_trl.baselines.rrhf import RRHFCollator, RRHFConfig, RRHFTrainer, build_candidates, check_group

FEATURES = [
    {"prompt": [{"role": "user", "content": "Name a colour."}],
     "candidates": ["blue", "The sky is blue on a clear day.", "green leaves"], "scores": [0.1, 0.9, 0.5]},
    {"prompt": [{"role": "user", "content": "Explain why the river flows."}],
     "candidates": ["Because of gravity and slope.", "no", "It just does, water moves down the hill."],
     "scores": [2.0, -1.0, 0.3]},
]


def hand_terms(model, tokenizer, prompt, answer):
    """Sum of response-token log-probs and the response length, one candidate alone (no padding)."""
    p_ids = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
    f_ids = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": answer}], tokenize=True,
                                          return_dict=True)["input_ids"]
    assert f_ids[: len(p_ids)] == p_ids
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([f_ids])).logits[0].double()
    total = 0.0
    for t in range(len(p_ids), len(f_ids)):
        row = logits[t - 1]
        total += float(row[f_ids[t]] - torch.logsumexp(row, -1))
    return total, len(f_ids) - len(p_ids)


@pytest.mark.parametrize("length_penalty", [1.0, 0.5])
def test_rrhf_loss_matches_hand_computation(tiny_model_dir, tmp_path, length_penalty):
    from citing_trl.models import load_model

    model, tokenizer = load_model(str(tiny_model_dir), dtype="float32")
    weight = 3.0
    args = RRHFConfig(output_dir=str(tmp_path), rrhf_weight=weight, length_penalty=length_penalty, use_cpu=True,
                      per_device_train_batch_size=2)
    trainer = RRHFTrainer(model, args, train_dataset=FEATURES, processing_class=tokenizer)
    batch = RRHFCollator(tokenizer, 512)(FEATURES)
    assert batch["input_ids"].shape[0] == 6 and batch["group"].tolist() == [0, 0, 0, 1, 1, 1]
    loss = trainer.compute_loss(model, batch)

    expected_rank, expected_sft = [], []
    for f in FEATURES:
        terms = [hand_terms(model, tokenizer, f["prompt"], c) for c in f["candidates"]]
        assert len({n for _, n in terms}) > 1  # different lengths: padding would change a padded-length division
        p = [s / n**length_penalty for s, n in terms]
        r = f["scores"]
        rank = sum(max(0.0, p[j] - p[i]) for i in range(3) for j in range(3) if r[i] > r[j])
        best = max(range(3), key=lambda i: r[i])
        expected_rank.append(rank)
        expected_sft.append(-terms[best][0] / terms[best][1])
    expected = weight * sum(expected_rank) / 2 + sum(expected_sft) / 2
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert float(trainer.last_info["sft_loss"]) == pytest.approx(sum(expected_sft) / 2, rel=1e-4)
    assert float(trainer.last_info["rank_loss"]) == pytest.approx(sum(expected_rank) / 2, rel=1e-4, abs=1e-6)
    assert trainer.last_info["best"] == [1, 3]  # candidate 1 of prompt 0, candidate 0 of prompt 1 (flat index 3)
    assert sum(expected_rank) > 0  # the random model mis-ranks something, so the hinge term is exercised


def test_rrhf_skips_are_counted_by_row(caplog):
    stats = Counter()
    assert not check_group("row-7", [], [], stats)
    assert not check_group("row-8", ["a", "b"], [1.0, 1.0], stats)
    assert check_group("row-9", ["a", "b"], [1.0, 2.0], stats)
    assert stats == Counter(skipped_no_candidates=1, skipped_equal_scores=1)
    assert "row-7" in caplog.text and "row-8" in caplog.text


class MarkerScorer:
    """Rule-based stand-in for a reward model: reward = answer length in words."""

    def score(self, prompts, completions):
        return [float(len(c.split())) for c in completions]


def test_build_candidates_samples_gold_and_revisions_then_trains(tiny_model_dir, tmp_path):
    from citing_trl.models import load_model

    model, tokenizer = load_model(str(tiny_model_dir), dtype="float32")
    rows = [
        {"id": "a", "instruction": "Name a colour.", "input": "", "output": "Blue is a colour of the sky"},
        {"id": "b", "instruction": "Say something.", "input": "", "output": "",
         "candidates": ["same", "same"], "scores": [1.0, 1.0]},
    ]
    args = RRHFConfig(output_dir=str(tmp_path / "out"), num_samples=3, use_cpu=True,
                      per_device_train_batch_size=1, max_steps=2, learning_rate=1e-3, logging_steps=1,
                      save_strategy="no", disable_tqdm=True)
    records, stats = build_candidates(rows, model, tokenizer, MarkerScorer(), args,
                                      revisions={"a": ["A revised answer"]}, path=tmp_path / "cands.jsonl",
                                      sampling=SamplingArguments(sample_max_new_tokens=8).build())
    assert stats["skipped_equal_scores"] == 1 and [r["id"] for r in records] == ["a"]
    cands = records[0]["candidates"]
    assert len(cands) <= 5 and cands[-2:] == ["Blue is a colour of the sky", "A revised answer"]
    assert records[0]["scores"] == [float(len(c.split())) for c in cands]
    again, _ = build_candidates(rows, None, None, None, args, path=tmp_path / "cands.jsonl")  # resumed from disk
    assert again == records
    model.train()
    trainer = RRHFTrainer(model, args, train_dataset=records * 2, processing_class=tokenizer)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())
    assert math.isfinite(trainer.state.log_history[0]["loss"])
    assert "rank_loss" in trainer.state.log_history[0]


def test_candidates_cut_to_no_response_token_are_dropped_before_ranking(tiny_model_dir, tmp_path, caplog):
    from citing_trl.models import load_model
    from citing_trl.prompts import instruction_messages

    _, tokenizer = load_model(str(tiny_model_dir), dtype="float32")
    long_instruction = "Explain " + "very " * 60 + "carefully."
    rows = [{"id": "long", "instruction": long_instruction, "input": "", "candidates": ["yes", "no", "maybe"],
             "scores": [1.0, 2.0, 3.0]},
            {"id": "short", "instruction": "Hi?", "input": "", "candidates": ["yes", "no"], "scores": [1.0, 2.0]}]
    prompt_len = len(tokenizer.apply_chat_template(instruction_messages(long_instruction, ""), tokenize=True,
                                                   add_generation_prompt=True, return_dict=True)["input_ids"])
    args = RRHFConfig(output_dir=str(tmp_path / "out"), max_length=prompt_len, use_cpu=True)  # long prompt fills it
    records, stats = build_candidates(rows, None, tokenizer, None, args)
    assert [r["id"] for r in records] == ["short"] and records[0]["candidates"] == ["yes", "no"]
    assert stats["dropped_empty_candidates"] == 3 and stats["skipped_no_candidates"] == 1 and stats["prompts"] == 1
    assert "row long: dropping 3 of 3 candidates" in caplog.text
    batch = RRHFCollator(tokenizer, args.max_length)(records)
    assert (batch["response_mask"].sum(-1) > 0).all()


def test_build_candidates_under_gold_reward_counts_equal_groups(monkeypatch, caplog):
    """0/1 gold reward: the ground truth scores 1; all-right and all-wrong groups are skipped AND counted apart;
    a ground truth the metric cannot accept (NQ gold ")") is counted and logged."""
    from citing_trl.baselines import rrhf
    from citing_trl.evaluation.gold import is_correct
    from citing_trl.generation import Generation
    from citing_trl.reward import GoldScorer

    rows = [
        {"id": "b1", "source": "boolq", "instruction": "Is the sky blue?", "input": "", "output": "yes", "answers": ["yes"]},
        {"id": "b2", "source": "boolq", "instruction": "Is grass red?", "input": "", "output": "no", "answers": ["no"]},
        {"id": "n1", "source": "nq_open", "instruction": "Odd?", "input": "", "output": ")", "answers": [")"]},
    ]
    samples = {"Is the sky blue?": ["No.", "Yes, it is."], "Is grass red?": ["no", "No, green."],
               "Odd?": ["x", "y"]}
    monkeypatch.setattr(rrhf, "sample_answers", lambda model, tok, prompts, n, gen, desc: [
        [Generation(t, 1, 1, "stop") for t in samples[p[-1]["content"].split("\n")[0]]] for p in prompts])
    args = RRHFConfig(output_dir="unused", num_samples=2, use_cpu=True)
    records, stats = build_candidates(rows, None, None, GoldScorer(rows), args)
    assert [r["id"] for r in records] == ["b1"]
    assert records[0]["candidates"] == ["No.", "Yes, it is.", "yes"] and records[0]["scores"] == [0.0, 1.0, 1.0]
    for r in records:
        row = next(x for x in rows if x["id"] == r["id"])
        assert r["scores"] == [float(is_correct(row["source"], c, row["answers"])) for c in r["candidates"]]
    assert stats == Counter(prompts=1, skipped_equal_scores=2, skipped_equal_all_right=1, skipped_equal_all_wrong=1,
                            gold_candidate_not_accepted=1)
    assert "does not accept the ground truth of 1 rows (e.g. n1)" in caplog.text

    stats_model = build_candidates(rows, None, None, MarkerScorer(), args)[1]  # a real-valued reward: no 0/1 split
    assert "skipped_equal_all_right" not in stats_model and "gold_candidate_not_accepted" not in stats_model


@pytest.mark.slow
def test_rrhf_launcher_gold_reward_end_to_end(tiny_model_dir, tmp_path):
    """`baselines/rrhf.py --reward gold` in a subprocess on the tiny model: every candidate's score is the gold
    metric's verdict, the ground truth scores 1, and reward.json and candidates.stats.json say what happened."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from citing_trl.evaluation.gold import is_correct

    repo = Path(__file__).resolve().parents[1]
    rows = [{"id": f"b{i}", "source": "boolq", "instruction": f"Is thing {i} blue?", "input": "",
             "output": "yes" if i % 2 else "no", "answers": ["yes" if i % 2 else "no"]} for i in range(4)]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "rrhf"
    env = {**os.environ, "PYTHONPATH": str(repo), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, str(repo / "baselines" / "rrhf.py"), "--config", str(repo / "baselines/configs/rrhf_demo.yaml"),
         "--model_name_or_path", str(tiny_model_dir), "--dataset", str(data), "--max_samples", "4",
         "--sft_adapter", "", "--citing_run", "", "--reward", "gold", "--reward_model", "", "--num_samples", "2",
         "--sample_max_new_tokens", "6", "--max_steps", "1", "--per_device_train_batch_size", "2", "--lora_r", "4",
         "--lora_alpha", "8", "--disable_tqdm", "true", "--output_dir", str(out)],
        capture_output=True, text=True, env=env, cwd=repo, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    info = json.loads((out / "reward.json").read_text())
    assert info["method"] == "RRHF" and info["kind"] == "gold" and info["reward_model"] is None
    by_text = {r["instruction"]: r for r in rows}
    cands = [json.loads(x) for x in (out / "candidates.jsonl").read_text().splitlines()]
    stats = json.loads((out / "candidates.stats.json").read_text())
    assert len(cands) + stats.get("skipped_equal_scores", 0) + stats.get("skipped_no_candidates", 0) == 4
    for c in cands:
        row = by_text[c["prompt"][-1]["content"]]
        assert c["scores"] == [float(is_correct("boolq", t, row["answers"])) for t in c["candidates"]]
        assert c["candidates"][-1] == row["output"] and c["scores"][-1] == 1.0  # the ground truth, right
    assert "prompts trained; reward: gold (verifiable)" in proc.stdout
    assert (out / "adapter_model.safetensors").is_file()
