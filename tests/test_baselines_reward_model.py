"""Reward model (contract C3): learnable toy preference on the tiny model, train-format == score-format,
preference loading errors, and a real SmolLM2 reward model on gold ≻ wrong answers (slow)."""

from __future__ import annotations

import json
import random

import pytest

from citing_trl.baselines.preferences import (
    PreferenceArguments,
    PreferenceError,
    load_preferences,
    make_pair,
    multiple_choice_pairs,
    split_pairs,
)

WORDS = "the a cat dog runs fast slow house tree river blue green small large answer question".split()


def toy_pairs(n: int, seed: int = 0) -> list[dict]:
    """Chosen answers contain the marker word 'excellent', rejected ones do not: learnable from text alone."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        body = " ".join(rng.choice(WORDS) for _ in range(6))
        other = " ".join(rng.choice(WORDS) for _ in range(6))
        pairs.append(make_pair(f"toy-{i}", f"Describe item {i}.", "", f"{body} excellent", other))
    return pairs


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def model_args(path, **kw):
    from trl import ModelConfig

    return ModelConfig(model_name_or_path=str(path), lora_r=8, lora_alpha=16, lora_dropout=0.0, dtype="float32", **kw)


def rm_args(out, **kw):
    from citing_trl.baselines.reward_model import RewardModelConfig

    base = dict(output_dir=str(out), per_device_train_batch_size=8, num_train_epochs=6, learning_rate=3e-3,
                logging_steps=5, save_strategy="no", use_cpu=True, bf16=False, seed=0, max_length=128,
                disable_tqdm=True)
    base.update(kw)
    return RewardModelConfig(**base)


def test_toy_reward_model_beats_chance_and_scores_like_training(tiny_model_dir, tmp_path):
    from citing_trl.baselines.reward_model import RewardScorer, train_reward_model

    data = write_jsonl(tmp_path / "prefs.jsonl", [
        {"id": p["id"], "prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]}
        for p in toy_pairs(120)
    ])
    pref = PreferenceArguments(preferences=str(data), eval_fraction=0.25)
    trainer, metrics = train_reward_model(pref, rm_args(tmp_path / "rm"), model_args(tiny_model_dir))
    assert metrics["held_out_pairs"] == 30
    assert metrics["held_out_accuracy"] >= 0.8, metrics  # chance is 0.5

    # Reload from disk: the score head came back with the adapter (same scores as in memory).
    scorer = RewardScorer.load(tmp_path / "rm")
    pairs, _ = load_preferences(pref)
    _, held = split_pairs(pairs, 0.25, 42)
    fresh = RewardScorer(trainer.model, trainer.processing_class)
    texts = [p["chosen"][0]["content"] for p in held[:6]]
    a = scorer.score([p["prompt"] for p in held[:6]], texts)
    b = fresh.score([p["prompt"] for p in held[:6]], texts)
    assert a == pytest.approx(b, abs=1e-4)

    # Train-format == score-format: the ids RewardTrainer built for a pair are the scorer's ids.
    prepared = trainer.train_dataset
    row = prepared[0]
    train_pairs, _ = split_pairs(pairs, 0.25, 42)
    assert row["chosen_ids"] == scorer.encode(train_pairs[0]["prompt"], train_pairs[0]["chosen"][0]["content"])
    assert row["rejected_ids"] == scorer.encode(train_pairs[0]["prompt"], train_pairs[0]["rejected"][0]["content"])
    # No extra EOS for conversational data: the ids end exactly where the chat template ends.
    tok = scorer.tokenizer
    rendered = tok.apply_chat_template(train_pairs[0]["prompt"] + train_pairs[0]["chosen"], tokenize=False)
    assert tok.decode(row["chosen_ids"]) == rendered
    # Pad differs from every token of the sequence, so the reward is pooled at the true last token.
    assert tok.pad_token_id not in row["chosen_ids"]


def test_preference_rows_errors_and_equal_skips(tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [
        {"prompt": "Say hi.", "chosen": "hi", "rejected": "no"},
        {"id": "r2", "prompt": "Say hi.", "chosen": "hi"},
    ])
    with pytest.raises(PreferenceError, match=r"row 2 \(id r2\): missing rejected"):
        load_preferences(PreferenceArguments(preferences=str(bad)))
    torn = tmp_path / "torn.jsonl"
    torn.write_text('{"prompt": "Say hi.", "chosen": "hi", "rejected": "no"}\n{"prompt": "Say\n')
    with pytest.raises(PreferenceError, match=r"torn\.jsonl: line 2: not valid JSON"):
        load_preferences(PreferenceArguments(preferences=str(torn)))
    ok = write_jsonl(tmp_path / "ok.jsonl", [
        {"prompt": "Say hi.", "chosen": "hi", "rejected": "no"},
        {"prompt": "Say hi.", "chosen": "Same  answer", "rejected": "same answer"},
    ])
    pairs, stats = load_preferences(PreferenceArguments(preferences=str(ok)))
    assert len(pairs) == 1 and stats["skipped_equal"] == 1
    assert pairs[0]["prompt"] == [{"role": "user", "content": "Say hi."}]
    with pytest.raises(PreferenceError, match="--pair_source"):
        PreferenceArguments(preferences=str(ok), pair_source="teacher")


def test_pairs_from_citing_run(tmp_path):
    from citing_trl.prompts import instruction_messages

    run = tmp_path / "run"
    for k in (0, 1):
        (run / f"round_{k}").mkdir(parents=True)
        write_jsonl(run / f"round_{k}" / "revisions.jsonl", [
            {"id": "a", "instruction": "Name a colour.", "input": "", "criteria": "- short", "response": f"r{k}",
             "revision": f"blue {k}"},
            {"id": "b", "instruction": "Name a fruit.", "input": "ctx", "criteria": "- short", "response": "same",
             "revision": "same"},
        ])
        write_jsonl(run / f"round_{k}" / "rollouts.jsonl", [{"id": "a", "response": f"r{k}"}, {"id": "b", "response": "x"}])
    pairs, stats = load_preferences(PreferenceArguments(preferences=str(run)))
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == [("blue 0", "r0"), ("blue 1", "r1")]
    assert pairs[0]["prompt"] == instruction_messages("Name a colour.", "")
    assert stats["skipped_equal"] == 2
    gold = write_jsonl(tmp_path / "gold.jsonl", [{"id": "a", "instruction": "Name a colour.", "output": "red"}])
    pairs, stats = load_preferences(PreferenceArguments(preferences=str(run), pair_source="gold", gold_dataset=str(gold)))
    assert {(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs} == {("red", "r0"), ("red", "r1")}
    assert stats["no_gold"] == 2  # row b has no gold answer in the gold file (a is matched by its text)


def test_multiple_choice_pairs():
    rows = [
        {"id": "1", "instruction": "Q?", "input": "A. cat\nB. dog", "output": "B. dog"},
        {"id": "2", "instruction": "Q2?", "input": "", "output": "yes"},
        {"id": "3", "instruction": "Q3?", "input": "", "output": "Paris"},
    ]
    pairs = multiple_choice_pairs(rows)
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == [("B. dog", "A. cat"), ("yes", "no")]


@pytest.mark.slow
def test_smollm2_reward_format_and_padding(smollm2_dir, tmp_path):
    """On the real SmolLM2 tokenizer (pad == EOS == <|im_end|>): the reward tokenizer pads with another token, the
    trainer's ids are the scorer's ids (no extra EOS after the chat template), and batching/padding does not change
    a score."""
    from trl import RewardTrainer

    from citing_trl.baselines.preferences import pairs_dataset
    from citing_trl.baselines.reward_model import (
        RewardScorer,
        load_backbone,
        reward_lora_config,
        reward_tokenizer,
    )

    tok = reward_tokenizer(str(smollm2_dir))
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id != tok.eos_token_id
    model = load_backbone(str(smollm2_dir), tok, "float32")
    pairs = [make_pair("a", "What is 2+2?", "", "4", "5"),
             make_pair("b", "Name a long river in Africa, please.", "", "The Nile is a very long river.", "Paris")]
    trainer = RewardTrainer(model=model, args=rm_args(tmp_path, max_steps=1, pad_token=tok.pad_token),
                            train_dataset=pairs_dataset(pairs), processing_class=tok, peft_config=reward_lora_config(
                                model_args(smollm2_dir)))
    scorer = RewardScorer(trainer.model, tok, batch_size=4)
    for row, pair in zip(trainer.train_dataset, pairs):
        ids = scorer.encode(pair["prompt"], pair["chosen"][0]["content"])
        assert row["chosen_ids"] == ids
        assert tok.convert_ids_to_tokens(ids[-2:]) == ["<|im_end|>", "Ċ"]  # template's own ending, no extra EOS
        assert tok.pad_token_id not in ids
    prompts = [p["prompt"] for p in pairs] * 2
    texts = [p["chosen"][0]["content"] for p in pairs] + [p["rejected"][0]["content"] for p in pairs]
    batched = scorer.score(prompts, texts)
    one_by_one = [RewardScorer(trainer.model, tok, batch_size=1).score([p], [t])[0] for p, t in zip(prompts, texts)]
    assert batched == pytest.approx(one_by_one, abs=1e-4)
