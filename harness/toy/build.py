"""Build the toy model: train a byte-level BPE tokenizer, SFT a tiny Llama on the toy corpus, save a folder.

The result is an ordinary transformers model folder (see cache.py for where it goes and when).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from harness.toy import corpus

DONE_MARKER = "toy_build.json"  # the build's record, written last
BOS, EOS, PAD, IM_START = "<s>", "<|im_end|>", "<pad>", "<|im_start|>"
SPECIAL_TOKENS = (PAD, BOS, IM_START, EOS)

# ChatML. Role headers end in "\n" and content follows directly, so the prompt rendered with
# add_generation_prompt is a token prefix of prompt+answer (byte-level BPE never merges across "\n"
# followed by a letter). The {% generation %} block lets transformers return assistant-token masks.
CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- generation -%}{{- message['content'] + '<|im_end|>\\n' -}}{%- endgeneration -%}"
    "{%- else -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

RECIPE = {  # every knob of the build; part of the cache key
    "seed": 0,
    "threads": 1,  # deterministic weights; 2 threads thrash on a busy machine (5x slower seen)
    "vocab_size": 640,  # corpus words become single tokens; room for names like " Athene"
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "tie_word_embeddings": False,  # tied, DPO's push on Llama's row often moved mass to "," ("I am, a ...")
    "max_position_embeddings": 128,  # longest toy conversation is ~52 tokens
    "epochs": 4,  # 3 left a third of the sums wrong
    "row_tokens": 128,  # conversations are packed into rows of this many tokens
    "rows_per_batch": 2,  # ~9 conversations per step: more updates per epoch, firmer facts
    "learning_rate": 1.5e-3,  # tiny models train fast and stably at high lr with warmup
    "warmup_steps": 30,
    "weight_decay": 0.01,
}


def train_tokenizer(texts: list[str], vocab_size: int, max_length: int = 128) -> PreTrainedTokenizerFast:
    """Byte-level BPE (as GPT-2/Llama 3/Qwen): any text encodes, no unknown tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[IM_START],
        chat_template=CHAT_TEMPLATE,
        model_max_length=max_length,
        padding_side="right",
    )


def make_model(tokenizer: PreTrainedTokenizerFast, recipe: dict) -> LlamaForCausalLM:
    """A randomly initialised Llama sized by `recipe` (keys it lacks come from RECIPE)."""
    recipe = {**RECIPE, **recipe}
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=recipe["hidden_size"],
        intermediate_size=recipe["intermediate_size"],
        num_hidden_layers=recipe["num_hidden_layers"],
        num_attention_heads=recipe["num_attention_heads"],
        num_key_value_heads=recipe["num_attention_heads"],
        max_position_embeddings=recipe["max_position_embeddings"],
        tie_word_embeddings=recipe["tie_word_embeddings"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def encode_sft(tokenizer: PreTrainedTokenizerFast, conv: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """Token ids and labels that score only the final assistant turn (answer + <|im_end|>\\n)."""
    prompt = tokenizer.apply_chat_template(conv[:-1], add_generation_prompt=True, tokenize=True)
    full = tokenizer.apply_chat_template(conv, tokenize=True)
    prompt_ids, ids = _ids(prompt), _ids(full)
    assert ids[: len(prompt_ids)] == prompt_ids, "chat template broke the prompt-prefix property"
    return ids, [-100] * len(prompt_ids) + ids[len(prompt_ids) :]


def _ids(encoded) -> list[int]:
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


Example = tuple[list[int], list[int]]  # token ids, labels


def sft(model: LlamaForCausalLM, examples: list[Example], recipe: dict, pad_id: int, log: Callable) -> float:
    """Plain AdamW loop with warmup + cosine decay over packed rows; returns the last epoch's mean loss."""
    gen = torch.Generator().manual_seed(recipe["seed"])
    epochs = [_packed_batches(examples, recipe, pad_id, gen) for _ in range(recipe["epochs"])]
    total = sum(len(batches) for batches in epochs)
    lr, decay = recipe["learning_rate"], recipe["weight_decay"]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=decay)
    warm = recipe["warmup_steps"]
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total)))
    )
    model.train()
    mean = float("nan")
    for epoch, batches in enumerate(epochs):
        losses = []
        for ids, labels, positions in batches:
            # No mask, no cache, position ids restarting per conversation: attention is block-diagonal.
            loss = model(input_ids=ids, position_ids=positions, labels=labels, use_cache=False).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
        mean = sum(losses) / len(losses)
        log(f"toy SFT epoch {epoch + 1}/{recipe['epochs']}: loss {mean:.3f}")
    model.eval()
    return mean


def _packed_batches(examples: list, recipe: dict, pad_id: int, gen: torch.Generator) -> list[tuple]:
    """One epoch of shuffled conversations packed first-fit into rows: no compute is spent on padding."""
    width = recipe["row_tokens"]
    rows: list[list[int]] = []
    fill: list[int] = []
    for j in torch.randperm(len(examples), generator=gen).tolist():
        n = len(examples[j][0])
        fits = [r for r in range(max(0, len(rows) - 8), len(rows)) if fill[r] + n <= width]
        if fits:
            rows[fits[0]].append(j)
            fill[fits[0]] += n
        else:
            rows.append([j])
            fill.append(n)
    per = recipe["rows_per_batch"]
    return [
        _collate([rows[r] for r in range(i, min(i + per, len(rows)))], examples, width, pad_id)
        for i in range(0, len(rows), per)
    ]


def _collate(rows: list[list[int]], examples: list, width: int, pad_id: int) -> tuple:
    ids = torch.full((len(rows), width), pad_id)
    labels = torch.full((len(rows), width), -100)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    for r, members in enumerate(rows):
        at = 0
        for j in members:
            x, y = examples[j]
            ids[r, at : at + len(x)] = torch.tensor(x)
            labels[r, at : at + len(y)] = torch.tensor(y)
            positions[r, at : at + len(x)] = torch.arange(len(x))
            at += len(x)
        positions[r, at:] = torch.arange(width - at)  # the padding tail is one more (unscored) sequence
    return ids, labels, positions


def tokenizer_texts(seed: int = 0) -> list[str]:
    """What the tokenizer learns merges from: every SFT and pair text, with the chat roles."""
    convs = corpus.sft_conversations(seed)
    texts = ["".join(f"{m['role']}\n{m['content']}\n" for m in conv) for conv in convs]
    for make in corpus.PAIR_SOURCES.values():
        for pair in make():
            messages = pair["prompt"] + pair["chosen"] + pair["rejected"]
            texts.append("\n".join(m["content"] for m in messages))
    return texts


def build_into(folder: Path, recipe: dict, log: Callable[[str], None]) -> None:
    """Tokenizer, model, SFT, save: the whole recipe, written into `folder`."""
    start = time.perf_counter()
    torch.manual_seed(recipe["seed"])
    tokenizer = train_tokenizer(
        tokenizer_texts(recipe["seed"]), recipe["vocab_size"], recipe["max_position_embeddings"]
    )
    examples = [encode_sft(tokenizer, conv) for conv in corpus.sft_conversations(recipe["seed"])]
    model = make_model(tokenizer, recipe)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"toy model: {n_params / 1e6:.2f}M parameters, {len(examples)} SFT conversations")
    loss = sft(model, examples, recipe, tokenizer.pad_token_id, log)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    seconds = time.perf_counter() - start
    info = {"recipe": recipe, "parameters": n_params, "sft_loss": loss, "build_seconds": round(seconds, 1)}
    (folder / DONE_MARKER).write_text(json.dumps(info, indent=2) + "\n")  # last: marks the folder complete
    log(f"toy model built in {seconds:.0f}s (final SFT loss {loss:.3f})")
