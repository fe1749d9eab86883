"""CitingTrainer (Eq. 4): prompt pr(x, c, r(k)) is masked, the revision r(k+1) is the only target."""

from __future__ import annotations

import pytest
from datasets import Dataset

from citing_trl.citing_trainer import CitingConfig, CitingTrainer, build_citing_dataset
from citing_trl.prompts import revision_messages


def revision_rows(n=6):
    return Dataset.from_list(
        [
            {
                "id": f"r{i}",
                "instruction": f"Explain item {i} in one sentence.",
                "input": "" if i % 2 else f"Context number {i}.",
                "criteria": "- A good answer is specific.\n- A bad answer is vague.",
                "response": f"Item {i} is a thing.",
                "revision": f"Item {i} is a specific, well described thing with a clear purpose.",
                "round": 0,
            }
            for i in range(n)
        ]
    )


def make_config(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path / "out"), use_cpu=True, bf16=False, report_to="none", max_length=512,
        per_device_train_batch_size=2, gradient_checkpointing=False, save_strategy="no", logging_steps=1,
        learning_rate=5e-3, num_train_epochs=1,
    )
    base.update(kw)
    return CitingConfig(**base)


def make_trainer(tmp_path, tiny_model_dir, **kw):
    from peft import LoraConfig

    from citing_trl.models import load_model

    model, tok = load_model(str(tiny_model_dir))
    return CitingTrainer(
        model=model, args=make_config(tmp_path, **kw), revision_dataset=revision_rows(), processing_class=tok,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
        rubric_categories=["explanation"], round_index=0, num_rounds=2, teacher_model="teacher-x",
    )


def test_labels_mask_prompt_and_keep_completion(tmp_path, tiny_model_dir):
    trainer = make_trainer(tmp_path, tiny_model_dir)
    tok = trainer.processing_class
    rows = revision_rows()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    assert trainer.args.completion_only_loss is True
    checked = 0
    for i in range(len(rows)):
        row = rows[i]
        prompt_ids = tok.apply_chat_template(
            revision_messages(row["instruction"], row["input"], row["criteria"], row["response"]),
            tokenize=True, add_generation_prompt=True, return_dict=False,
        )
        ids = batch["input_ids"][i].tolist()
        labels = batch["labels"][i].tolist()
        attn = batch["attention_mask"][i].tolist()
        n_tokens = sum(attn)
        n_prompt = len(prompt_ids)
        assert ids[:n_prompt] == list(prompt_ids), "the prompt must be the revision prompt pr(x, c, r(k))"
        assert all(lab == -100 for lab in labels[:n_prompt]), "every prompt token must be masked"
        completion = labels[n_prompt:n_tokens]
        assert completion == ids[n_prompt:n_tokens], "every completion token must be a target"
        assert tok.decode(completion, skip_special_tokens=True).strip().startswith(row["revision"][:20])
        assert all(lab == -100 for lab in labels[n_tokens:]), "padding is never a target"
        checked += 1
    assert checked == len(rows)


def test_training_changes_adapter_and_writes_card(tmp_path, tiny_model_dir):
    trainer = make_trainer(tmp_path, tiny_model_dir, num_train_epochs=3)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    result = trainer.train()
    after = dict(trainer.model.named_parameters())
    assert any(not after[n].detach().equal(before[n]) for n in before), "LoRA weights did not move"
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses and losses[-1] < losses[0]
    assert result.training_loss > 0
    trainer.save_model(trainer.args.output_dir)
    trainer.create_model_card(model_name="citing-test")
    card = (tmp_path / "out" / "README.md").read_text()
    assert "CITING" in card and "teacher-x" in card and "explanation" in card and "2310.02527" in card


def test_replay_mixes_sft_rows():
    replay = Dataset.from_list(
        [{"instruction": f"Say {i}.", "input": "", "output": f"{i}"} for i in range(20)]
    )
    rows = build_citing_dataset(revision_rows(10), replay, replay_fraction=0.3, seed=1)
    assert len(rows) == 13
    prompts = [r["prompt"][0]["content"] for r in rows]
    assert sum(p.startswith("Say ") for p in prompts) == 3


def test_config_rejects_full_sequence_loss(tmp_path):
    with pytest.raises(ValueError, match="completion_only_loss"):
        make_config(tmp_path, completion_only_loss=False)
    with pytest.raises(ValueError, match="replay_fraction"):
        make_config(tmp_path, replay_fraction=1.5)
