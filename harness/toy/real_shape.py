"""A random-init model with a real model's shape, for tests and benchmarks (not for sweeps).

Qwen2 layout with Qwen's 151,936-token vocabulary, a byte-level BPE tokenizer (trained on the toy
pairs in well under a second, then padded with unreachable entries to the full vocabulary) and a
ChatML template, but a tiny hidden size and one or two layers, so it is built, saved and run on a
CPU in seconds. It is untrained: its answers are noise, which is what a test of scoring memory or of
a margin's fairness wants. Saved, it is an ordinary model folder (`model.name: <folder>`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

QWEN_VOCAB = 151_936  # Qwen2/2.5's embedding rows (151,643 BPE tokens + special tokens + padding)
PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"  # Qwen's special tokens
CHAT_TEMPLATE = (  # Qwen's ChatML, without its default system prompt and tool calls
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
SHAPE = {  # a Qwen2 with the real vocabulary and everything else tiny
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,  # grouped-query attention, as Qwen2
    "max_position_embeddings": 4096,
    "tie_word_embeddings": True,  # as Qwen2-0.5B
}
LAYOUTS = {  # for benchmarks: SHAPE itself, or a real model's whole layout (random weights; a GPU's work)
    "real-vocab": {},
    "qwen2.5-0.5b": {  # Qwen2.5-0.5B's config.json: 494M parameters
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32768,
        "rope_theta": 1_000_000.0,
    },
}


def tokenizer(vocab_size: int = QWEN_VOCAB) -> Any:
    """Byte-level BPE trained on the toy pairs, padded to `vocab_size` entries with tokens no merge makes."""
    import json

    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from harness.toy import toy_pairs
    from harness.toy.build import train_tokenizer

    texts = [
        "\n".join(m["content"] for m in pair["prompt"] + pair["chosen"] + pair["rejected"])
        for source in ("identity", "general", "shortcut")
        for pair in toy_pairs(source)
    ]
    trained = train_tokenizer(texts, vocab_size=1000).backend_tokenizer
    data = json.loads(trained.to_str())
    vocab = data["model"]["vocab"]
    specials = {t["content"]: t["id"] for t in data["added_tokens"]}
    # The trained tokenizer has the toy's specials; rename them to Qwen's (same ids, before any BPE token).
    renames = {"<pad>": PAD, "<s>": "<|fim_pad|>", "<|im_start|>": IM_START, "<|im_end|>": IM_END}
    for token in data["added_tokens"]:
        token["content"] = renames[token["content"]]
    vocab = {renames.get(k, k): v for k, v in vocab.items()}
    for i in range(len(vocab), vocab_size):
        vocab[f"<unused{i}>"] = i  # no merge produces these: rows of the embedding that text never reaches
    data["model"]["vocab"] = vocab
    assert len(specials) == 4 and max(vocab.values()) == vocab_size - 1
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(data)),
        eos_token=IM_END,
        pad_token=PAD,
        additional_special_tokens=[IM_START],
        chat_template=CHAT_TEMPLATE,
        model_max_length=SHAPE["max_position_embeddings"],
        padding_side="right",
    )


def model(vocab_size: int = QWEN_VOCAB, seed: int = 0, **shape: Any) -> Any:
    """A random-init Qwen2ForCausalLM of SHAPE (overridable), float32."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=vocab_size, **{**SHAPE, **shape})
    return Qwen2ForCausalLM(config).eval()


def save(folder: Path, seed: int = 0, **shape: Any) -> Path:
    """Build tokenizer and model and save them as an ordinary model folder."""
    tok = tokenizer()
    net = model(len(tok), seed, **shape)
    net.config.pad_token_id = tok.pad_token_id
    net.config.eos_token_id = tok.eos_token_id
    net.generation_config.pad_token_id = tok.pad_token_id
    net.generation_config.eos_token_id = tok.eos_token_id
    folder.mkdir(parents=True, exist_ok=True)
    net.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
