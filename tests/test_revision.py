"""Teacher revisions: the truncated-but-complete-sentence rule and reference-guided revision (the gold answer
reaches the teacher's prompt, never the student's training prompt)."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset

from citing_trl.revision import teacher_revisions
from citing_trl.teacher import Completion
from citing_trl.verification import RevisionSettings, ends_complete_sentence, reject_reason

ROW = {"id": "q1", "instruction": "Is the sky blue?", "input": "Passage: The sky looks blue by day.",
       "criteria": "- A good answer is right.", "answers": ["yes"], "output": "yes", "source": "boolq"}
GOLD = "ZEBRA-GOLD-7"  # a gold answer no prompt would contain by chance


@pytest.mark.parametrize("text, complete", [
    ("The sky is blue because air scatters blue light.", True),
    ('He said "yes."', True),
    ("The sky is blue because air scatters blue", False),
    ("Yes. The sky is blue by day. The sky is blue by day.", False),  # a loop that happens to end on a period
    ("Yes! Is it? It is (mostly).", True),
])
def test_ends_complete_sentence(text, complete):
    assert ends_complete_sentence(text) is complete


def test_truncated_revision_kept_only_when_it_ends_a_sentence():
    whole, cut = "Yes, the passage says the sky looks blue.", "Yes, the passage says the sky looks"
    assert reject_reason(ROW, "no", whole, "length", RevisionSettings(keep_complete_truncated=True)) is None
    assert reject_reason(ROW, "no", cut, "length", RevisionSettings(keep_complete_truncated=True)) == "truncated"
    assert reject_reason(ROW, "no", whole, "length", RevisionSettings(keep_complete_truncated=False)) == "truncated"  # strict mode
    assert reject_reason(ROW, "no", cut, "length", RevisionSettings(reject_truncated=False)) is None  # keep everything


class RecordingTeacher:
    """Answers every revision request with a fixed text; remembers the prompts it was sent."""

    def __init__(self, answer: str, finish: str = "stop"):
        self.answer, self.finish, self.prompts = answer, finish, []

    def complete_detailed(self, requests, desc=""):
        prompts = [m[-1]["content"] for m in requests]
        self.prompts += prompts
        # an oracle: it states the gold answer when its prompt shows one
        return [Completion(f"The answer is {GOLD}." if GOLD in p else self.answer, self.finish, 10, 10) for p in prompts]


def rows():
    open_row = {"id": "open", "instruction": "Write a haiku about rain.", "input": "", "criteria": "- vivid",
                "answers": [], "output": "", "source": "demo"}
    return [{**ROW, "answers": [GOLD, "gold seven"], "output": GOLD}, open_row]


def test_reference_reaches_the_teacher_and_never_the_student(tmp_path, tiny_model_dir):
    from peft import LoraConfig

    from citing_trl.citing_trainer import CitingConfig, CitingTrainer
    from citing_trl.models import load_model

    responses = {"q1": "no", "open": "Rain falls."}
    teacher = RecordingTeacher("Soft rain on the roof.")
    accepted, rejected, counts, _ = teacher_revisions(teacher, rows(), responses, RevisionSettings(revision_reference=True))
    assert GOLD in teacher.prompts[0] and "gold seven" in teacher.prompts[0]
    assert "Reference answer" in teacher.prompts[0] and "Reference answer" not in teacher.prompts[1]  # no gold: plain
    plain = RecordingTeacher("The answer is yes.")
    teacher_revisions(plain, rows(), responses, RevisionSettings(revision_reference=False))
    assert GOLD not in plain.prompts[0]  # off: the teacher does not see it either
    assert [r["revision"] for r in accepted] == [f"The answer is {GOLD}.", "Soft rain on the roof."]
    assert all(GOLD not in json.dumps({k: v for k, v in r.items() if k != "revision"}) for r in accepted)
    assert counts == {"accepted": 2} and len(accepted) == 2

    model, tok = load_model(str(tiny_model_dir))
    out = tmp_path / "round"
    trainer = CitingTrainer(
        model=model, revision_dataset=Dataset.from_list(accepted), processing_class=tok,
        args=CitingConfig(output_dir=str(out), use_cpu=True, bf16=False, report_to="none", max_length=512,
                          per_device_train_batch_size=2, gradient_checkpointing=False, save_strategy="no",
                          num_train_epochs=1),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], task_type="CAUSAL_LM"),
        round_index=0, num_rounds=1, revision_settings={"revision_reference": True},
    )
    checked = 0
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
    for ids, labels, attn in zip(batch["input_ids"].tolist(), batch["labels"].tolist(), batch["attention_mask"].tolist()):
        prompt = tok.decode([t for t, lab, a in zip(ids, labels, attn) if lab == -100 and a])
        completion = tok.decode([t for t, lab in zip(ids, labels) if lab != -100])
        assert GOLD not in prompt and "Reference answer" not in prompt and "### Draft answer" in prompt
        checked += GOLD in completion  # the revision (target) may of course state the right answer
    assert checked == 1
    trainer.create_model_card(model_name="t")
    assert "Reference-guided revision: on" in (out / "README.md").read_text()
