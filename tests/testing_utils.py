"""Helpers only the tests use (TRL keeps such code in ``tests/testing_utils.py`` too): the tiny random model the
fast tests load, and ready-made gates."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from citing_trl.data import load_demo
from citing_trl.prompts import REVISION_HEADER
from citing_trl.verification import GoldGate, NoGate

gold_gate = GoldGate()  # stateless: one instance serves every test
no_gate = NoGate()


# --------------------------------------------------------------------------------------------------
# Tiny random model for fast tests (was citing_trl.models.build_tiny_model)
# --------------------------------------------------------------------------------------------------

TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_model(output_dir: str | Path, seed: int = 0, vocab_size: int = 512) -> Path:
    """Write a randomly initialised 2-layer Llama and a byte-level BPE tokenizer (with a chat template)
    trained on the demo data. Used by unit tests; never for claiming a feature works."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    output_dir = Path(output_dir)
    if (output_dir / "config.json").is_file():
        return output_dir

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [REVISION_HEADER] * 4 + [
        "The quick brown fox jumps over the lazy dog. Explain, describe, list, write, compare, why, how, what.",
        "### Task ### Draft answer ### Standards ### Improved answer user assistant system",
    ]
    try:
        corpus += [r["instruction"] + " " + r["output"] for r in load_demo()]
    except Exception:  # data module absent or broken: the fixed corpus is enough for a random model
        pass
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=output_dir.parent if output_dir.parent.exists() else None))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    if not output_dir.exists():
        os.replace(tmp, output_dir)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return output_dir
