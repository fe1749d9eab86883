"""Decoding controls of the one generation routine: they reach model.generate, stop greedy loops, look at the
answer only (never the prompt), never penalise EOS, and keep greedy decoding reproducible."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from citing_trl.generation import AnswerRepetitionControls, DecodingConfig, generate
from citing_trl.teacher import Teacher, TeacherConfig, cache_key

LOOPING = ["b b b b b b b b", "Tell me about the sea."]  # greedy on the tiny model: 'b b b ...', '......'


def repeated_ngrams(ids: list[int], n: int) -> int:
    """How many n-gram occurrences repeat an earlier one."""
    counts = Counter(tuple(ids[i : i + n]) for i in range(len(ids) - n + 1))
    return sum(c - 1 for c in counts.values())


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from citing_trl.models import load_model

    return load_model(str(tiny_model_dir))


def _generated_ids(model, tokenizer, config):
    """Run generate() and capture the token ids model.generate returned (new tokens only, EOS/pad cut)."""
    captured, original = [], model.generate

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        width = kwargs["input_ids"].shape[1]
        for row in out[:, width:].tolist():
            cut = next((i for i, tok in enumerate(row) if tok == tokenizer.eos_token_id), len(row))
            captured.append((row[:cut], kwargs))
        return out

    model.generate = spy
    try:
        gens = generate(model, tokenizer, LOOPING, config)
    finally:
        del model.generate
    return gens, captured


def test_repetition_controls_stop_a_greedy_loop(tiny):
    model, tokenizer = tiny
    base = DecodingConfig(max_new_tokens=40, show_progress=False)
    _, plain = _generated_ids(model, tokenizer, base)
    assert all(repeated_ngrams(ids, 3) >= 20 for ids, _ in plain), "the constructed prompts must loop greedily"
    assert all("logits_processor" not in kw for _, kw in plain)

    ngram = DecodingConfig(max_new_tokens=40, show_progress=False, no_repeat_ngram_size=3)
    _, blocked = _generated_ids(model, tokenizer, ngram)
    assert all("logits_processor" in kw for _, kw in blocked)
    assert all(repeated_ngrams(ids, 3) == 0 for ids, _ in blocked)

    penalty = DecodingConfig(max_new_tokens=40, show_progress=False, repetition_penalty=3.0)
    _, penalised = _generated_ids(model, tokenizer, penalty)
    for (ids, _), (loop, _) in zip(penalised, plain):
        assert len(set(ids)) > len(set(loop))
        assert repeated_ngrams(ids, 3) < repeated_ngrams(loop, 3)


def test_greedy_with_controls_is_reproducible(tiny):
    model, tokenizer = tiny
    config = DecodingConfig(max_new_tokens=24, show_progress=False, repetition_penalty=1.3, no_repeat_ngram_size=3)
    first = [g.text for g in generate(model, tokenizer, LOOPING, config)]
    assert first == [g.text for g in generate(model, tokenizer, LOOPING, config)]


def test_controls_ignore_the_prompt_and_never_penalise_eos():
    eos, vocab = 3, 10
    prompt = torch.tensor([[5, 5, 5, eos]])
    scores = torch.ones(1, vocab)
    controls = AnswerRepetitionControls(prompt.shape[1], repetition_penalty=2.0, no_repeat_ngram_size=2,
                                        exempt_ids=[eos])
    assert torch.equal(controls(prompt, scores.clone()), scores)  # nothing generated yet: prompt tokens are free
    after = controls(torch.tensor([[5, 5, 5, eos, 7, eos, 7]]), scores.clone())
    assert after[0, 7] == 0.5 and after[0, 5] == 1.0  # 7 was generated, 5 only appears in the prompt
    assert after[0, eos] == 1.0  # EOS is exempt from both the penalty and the n-gram ban ((7, eos) was seen)
    banned = controls(torch.tensor([[5, 5, 5, eos, 7, 8, 7]]), scores.clone())
    assert banned[0, 8] == float("-inf")  # (7, 8) was generated once: 8 may not follow 7 again


def test_teacher_cache_key_changes_with_decoding_controls(tmp_path):
    messages = [{"role": "user", "content": "hi"}]
    plain = Teacher(TeacherConfig(model="m"))
    controlled = Teacher(TeacherConfig(model="m", repetition_penalty=1.2, no_repeat_ngram_size=4))
    assert cache_key("m", messages, 0.0, 8, **plain.decoding_key()) == cache_key("m", messages, 0.0, 8)  # old keys hold
    assert cache_key("m", messages, 0.0, 8, **controlled.decoding_key()) != cache_key("m", messages, 0.0, 8)
    other = Teacher(TeacherConfig(model="m", repetition_penalty=1.2, no_repeat_ngram_size=3))
    assert other.decoding_key() != controlled.decoding_key()
    with pytest.raises(ValueError, match="repetition_penalty"):
        DecodingConfig(repetition_penalty=0)


def test_local_teacher_uses_the_controls(tiny, tmp_path):
    model, tokenizer = tiny
    request = [[{"role": "user", "content": "b b b b b b b b"}]]
    config = TeacherConfig(model="tiny", max_tokens=30, no_repeat_ngram_size=3)
    teacher = Teacher(config, cache_path=tmp_path / "cache.jsonl", model=model, tokenizer=tokenizer)
    text = teacher.complete(request)[0]
    expected = generate(model, tokenizer, request, DecodingConfig(max_new_tokens=30, show_progress=False,
                                                                    no_repeat_ngram_size=3))[0].text
    looping = generate(model, tokenizer, request, DecodingConfig(max_new_tokens=30, show_progress=False))[0].text
    assert text == expected and text != looping
    teacher.complete(request)
    assert teacher.ledger.cache_hits == 1


def test_top_k_reaches_generate_only_when_sampling(tiny, monkeypatch):
    """top_k is a setting: unset keeps the model's default, 0 samples from the full distribution."""
    model, tokenizer = tiny
    seen = []
    real = model.generate

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "generate", spy)
    for config in (DecodingConfig(max_new_tokens=2, do_sample=True, top_k=0, show_progress=False),
                   DecodingConfig(max_new_tokens=2, do_sample=True, show_progress=False),
                   DecodingConfig(max_new_tokens=2, top_k=5, show_progress=False)):
        generate(model, tokenizer, ["a"], config)
    assert seen[0]["top_k"] == 0
    assert "top_k" not in seen[1]
    assert seen[2]["top_k"] is None  # greedy: sampling knobs are cleared
    with pytest.raises(ValueError, match="--top_k must be >= 0"):
        DecodingConfig(top_k=-1)
