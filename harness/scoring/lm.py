"""Language-model primitives shared by every score: chat rendering, generation, log-probs.

Prompts are either plain strings (used as they are) or lists of chat messages (rendered with
the tokenizer's chat template, the way TRL renders them for training).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Prompt = str | list[dict[str, str]]


def prompt_ids(tokenizer: Any, prompt: Prompt) -> list[int]:
    if isinstance(prompt, str):
        return tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return _chat_ids(tokenizer, prompt, add_generation_prompt=True)


def full_ids(tokenizer: Any, prompt: Prompt, completion: str | list[dict[str, str]]) -> tuple[list[int], int]:
    """Token ids of prompt + completion, and where the completion starts (as TRL tokenizes pairs)."""
    p_ids = prompt_ids(tokenizer, prompt)
    if isinstance(prompt, str):
        text = completion if isinstance(completion, str) else completion[0]["content"]
        ids = tokenizer(prompt + text, add_special_tokens=False)["input_ids"]
        if tokenizer.eos_token_id is not None:
            ids = ids + [tokenizer.eos_token_id]
    else:
        messages = completion if isinstance(completion, list) else [{"role": "assistant", "content": completion}]
        ids = _chat_ids(tokenizer, prompt + messages, add_generation_prompt=False)
    start = next((i for i, (a, b) in enumerate(zip(p_ids, ids, strict=False)) if a != b), min(len(p_ids), len(ids)))
    return ids, start


def _chat_ids(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> list[int]:
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
    ids = out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out
    return list(ids)


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    max_new_tokens: int,
    samples: int = 1,
    temperature: float = 0.0,
    seed: int = 0,
    batch_size: int = 32,
) -> list[list[str]]:
    """Greedy (temperature 0) or sampled answers: one list of `samples` strings per prompt."""
    import torch

    torch.manual_seed(seed)
    out: list[list[str]] = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.eval()
    for start in range(0, len(prompts), batch_size):
        batch = [prompt_ids(tokenizer, p) for p in prompts[start : start + batch_size]]
        width = max(map(len, batch))
        ids = torch.tensor([[pad] * (width - len(b)) + b for b in batch], device=model.device)
        mask = torch.tensor([[0] * (width - len(b)) + [1] * len(b) for b in batch], device=model.device)
        kwargs: dict[str, Any] = {"do_sample": temperature > 0, "num_return_sequences": samples}
        if temperature > 0:
            kwargs |= {"temperature": temperature, "top_k": 0, "top_p": 1.0}
        with torch.no_grad():
            gen = model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, pad_token_id=pad, **kwargs
            )
        texts = tokenizer.batch_decode(gen[:, width:], skip_special_tokens=True)
        out += [[t.strip() for t in texts[i : i + samples]] for i in range(0, len(texts), samples)]
    return out


def completion_logps(
    model: Any, tokenizer: Any, prompts: Sequence[Prompt], completions: Sequence[Any], batch_size: int = 32
) -> list[float]:
    """Summed log-probability of each completion given its prompt."""
    seqs = [full_ids(tokenizer, p, c) for p, c in zip(prompts, completions, strict=True)]
    result: list[float] = []
    model.eval()
    for start in range(0, len(seqs), batch_size):
        logps, mask = _token_logps(model, tokenizer, seqs[start : start + batch_size])
        result += (logps * mask).sum(-1).tolist()
    return result


def _token_logps(model: Any, tokenizer: Any, seqs: list[tuple[list[int], int]]) -> tuple[Any, Any]:
    """Per-token log-probs of each sequence's own next tokens, and a mask of completion positions."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = max(len(ids) for ids, _ in seqs)
    ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in seqs], device=model.device)
    attn = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in seqs], device=model.device)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float()
    logps = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    positions = torch.arange(1, width, device=model.device)[None, :]
    starts = torch.tensor([s for _, s in seqs], device=model.device)[:, None]
    mask = (positions >= starts) & attn[:, 1:].bool()
    return logps.cpu(), mask.float().cpu()
