"""Language-model primitives shared by every score: tokenization as TRL trains, generation, log-probs.

Prompts are either plain strings or lists of chat messages (rendered with the tokenizer's chat
template). Sequences are tokenized and truncated exactly as TRL's DPOTrainer does for training
(`max_length`, `truncation_mode`), so a probe scores what the trial trained on. Memory is bounded by
design (harness.scoring.memory): micro-batches sized by a token budget, and log-probs taken from the
LM head a chunk of positions at a time, never as full-vocabulary logits for a whole batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from harness.scoring import memory

Prompt = str | list[dict[str, str]]
Completion = str | list[dict[str, str]]


# ---------------------------------------------------------------- tokenization and truncation


@dataclass(frozen=True)
class Truncation:
    """TRL's `max_length` / `truncation_mode` (DataCollatorForPreference): None keeps everything."""

    max_length: int | None = 512
    mode: Literal["keep_start", "keep_end"] = "keep_start"

    def apply(self, ids: list[int], start: int) -> Encoded | None:
        """Cut one sequence; None when TRL would drop it (keep_start and the prompt fills max_length)."""
        if self.max_length is None or len(ids) <= self.max_length:
            return Encoded(ids, start)
        if self.mode == "keep_end":
            cut = len(ids) - self.max_length
            return Encoded(ids[cut:], max(0, start - cut))
        if start >= self.max_length:
            return None
        return Encoded(ids[: self.max_length], start)


def truncation(train: Mapping[str, Any] | None = None) -> Truncation:
    """How a trial's sequences were truncated: its resolved `train` settings over the harness defaults
    (TRAIN_DEFAULTS: max_length 512) and TRL's default truncation_mode (keep_start)."""
    from harness.training import TRAIN_DEFAULTS  # a constant: TRL itself is not imported

    settings = {**TRAIN_DEFAULTS, **(train or {})}
    return Truncation(settings.get("max_length"), settings.get("truncation_mode") or "keep_start")


@dataclass(frozen=True)
class Encoded:
    ids: list[int]
    start: int  # index of the first completion token (TRL's prompt length)

    @property
    def scored(self) -> int:
        """Completion tokens that get a log-prob (the first token of a sequence has no context)."""
        return len(self.ids) - max(self.start, 1)


def prompt_ids(tokenizer: Any, prompt: Prompt) -> list[int]:
    """The prompt as TRL tokenizes it: plain text with the tokenizer's special tokens, chat messages
    through the chat template with the generation prompt."""
    if isinstance(prompt, str):
        return list(tokenizer(text=prompt)["input_ids"])
    return _chat_ids(tokenizer, prompt, add_generation_prompt=True)


def full_ids(tokenizer: Any, prompt: Prompt, completion: Completion) -> list[int]:
    """Prompt + completion as TRL tokenizes them (plain completions end with the EOS token)."""
    if isinstance(prompt, str):
        return list(tokenizer(text=full_text(tokenizer, prompt, completion))["input_ids"])
    return _chat_ids(tokenizer, prompt + _messages(completion), add_generation_prompt=False)


def prompt_text(tokenizer: Any, prompt: Prompt) -> str:
    """The text prompt_ids tokenizes: the prompt, or the chat template rendered with the generation prompt."""
    if isinstance(prompt, str):
        return prompt
    return tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)


def full_text(tokenizer: Any, prompt: Prompt, completion: Completion) -> str:
    """The text of prompt + completion: the chat template rendered, or prompt + completion + EOS (as TRL)."""
    if isinstance(prompt, str):
        text = completion if isinstance(completion, str) else completion[0]["content"]
        eos = tokenizer.eos_token
        return prompt + text + (eos if eos and not text.endswith(eos) else "")
    return tokenizer.apply_chat_template(prompt + _messages(completion), add_generation_prompt=False, tokenize=False)


def _messages(completion: Completion) -> list[dict[str, str]]:
    return completion if isinstance(completion, list) else [{"role": "assistant", "content": completion}]


def encode(tokenizer: Any, prompt: Prompt, completion: Completion, cut: Truncation) -> Encoded | None:
    """One completion after its prompt; it starts where the prompt and prompt + completion diverge."""
    p_ids = prompt_ids(tokenizer, prompt)
    ids = full_ids(tokenizer, prompt, completion)
    return cut.apply(ids, common_prefix(p_ids, ids))


def encode_pair(tokenizer: Any, pair: Mapping[str, Any], cut: Truncation) -> tuple[Encoded, Encoded] | None:
    """(chosen, rejected) as TRL's DPOTrainer tokenizes and truncates them; None when TRL drops the pair."""
    p_ids = prompt_ids(tokenizer, pair["prompt"])
    chosen = full_ids(tokenizer, pair["prompt"], pair["chosen"])
    rejected = full_ids(tokenizer, pair["prompt"], pair["rejected"])
    return _cut_pair(p_ids, chosen, rejected, cut)


def encode_pairs(
    tokenizer: Any, pairs: Sequence[Mapping[str, Any]], cut: Truncation
) -> list[tuple[Encoded, Encoded] | None]:
    """encode_pair of each pair, their texts rendered first and tokenized in one batch (the tokenizer's own
    threads): one pair at a time, auditing HH's 160k pairs took minutes in the chat template's tokenize call."""
    texts: list[tuple[str, bool]] = []  # (text, add the tokenizer's special tokens: plain text only, as TRL)
    for pair in pairs:
        prompt, plain = pair["prompt"], isinstance(pair["prompt"], str)
        texts += [(prompt_text(tokenizer, prompt), plain)]
        texts += [(full_text(tokenizer, prompt, pair[side]), plain) for side in ("chosen", "rejected")]
    ids: list[list[int]] = [[] for _ in texts]
    for special in (True, False):
        at = [i for i, (_, plain) in enumerate(texts) if plain == special]
        if at:
            encoded = tokenizer([texts[i][0] for i in at], add_special_tokens=special)["input_ids"]
            for i, row in zip(at, encoded, strict=True):
                ids[i] = list(row)
    return [_cut_pair(*ids[i : i + 3], cut) for i in range(0, len(ids), 3)]


def _cut_pair(
    p_ids: list[int], chosen: list[int], rejected: list[int], cut: Truncation
) -> tuple[Encoded, Encoded] | None:
    start = min(common_prefix(p_ids, chosen), common_prefix(p_ids, rejected))
    c, r = cut.apply(chosen, start), cut.apply(rejected, start)
    return None if c is None or r is None else (c, r)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _chat_ids(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> list[int]:
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
    ids = out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out
    return list(ids)


# ---------------------------------------------------------------- the model's parts


def _parts(model: Any) -> tuple[Callable[[], Any], Any, Any, Any]:
    """(context to run in, backbone, LM head, text config) of a transformers or PEFT causal LM.

    A wrapper with a `scoring_context` (the reference seen through a LoRA model with its adapter
    switched off) runs everything inside that context."""
    switch = getattr(model, "scoring_context", None)
    inner = model.model if switch else model
    if hasattr(inner, "get_base_model"):  # PEFT: the transformers model with the adapter layers in it
        inner = inner.get_base_model()
    config = inner.config.get_text_config() if hasattr(inner.config, "get_text_config") else inner.config
    return switch or contextlib.nullcontext, inner.base_model, inner.get_output_embeddings(), config


class _Head:
    """The LM head applied to a chunk of positions, into float32 buffers reused chunk after chunk.

    Reuse matters: allocating and freeing ~20-60 MB of logits per chunk lets the C allocator's arenas
    grow by a gigabyte or more on a CPU (seen in benchmarks/scoring_memory.py). A head the harness
    cannot see as a plain Linear (an adapter on it) is called as a module instead."""

    def __init__(self, head: Any, config: Any, context: Callable[[], Any], rows: int):
        import torch

        self.head, self.context, self.rows = head, context, rows
        self.plain = type(head) is torch.nn.Linear
        self.scale = getattr(config, "logit_scale", None)  # Cohere
        self.softcap = getattr(config, "final_logit_softcapping", None)  # Gemma 2
        self.out: Any = None  # model-dtype buffer, when that is not float32
        self.out32: Any = None

    def __call__(self, hidden: Any) -> Any:
        """Float32 logits (n, V) of n <= rows positions: a view of the buffer, valid until the next call."""
        import torch

        n = hidden.shape[0]
        with torch.no_grad(), self.context():
            if not self.plain:
                logits = self.head(hidden).float()
            else:
                weight = self.head.weight
                if self.out32 is None:
                    self.out32 = torch.empty(self.rows, weight.shape[0], device=hidden.device, dtype=torch.float32)
                    if hidden.dtype != torch.float32:
                        self.out = torch.empty(self.rows, weight.shape[0], device=hidden.device, dtype=hidden.dtype)
                logits = self.out32[:n]
                target = logits if self.out is None else self.out[:n]
                torch.mm(hidden, weight.t(), out=target)
                if self.head.bias is not None:
                    target.add_(self.head.bias)
                if self.out is not None:
                    logits.copy_(target)
        if self.scale is not None:
            logits.mul_(self.scale)
        if self.softcap is not None:
            logits.div_(self.softcap).tanh_().mul_(self.softcap)
        return logits


def _log_softmax_(logits: Any, scratch: Any) -> Any:
    """log-softmax over the last dimension, in place; `scratch` (same shape) takes the exponentials."""
    import torch

    top = logits.amax(-1, keepdim=True)
    torch.sub(logits, top, out=scratch).exp_()
    return logits.sub_(scratch.sum(-1, keepdim=True).log_().add_(top))


def _device(model: Any) -> Any:
    device = getattr(model, "device", None)
    return device if device is not None else next(model.parameters()).device


def _pad_id(tokenizer: Any) -> int:
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return value
    return 0


def _budget(model: Any, budget: memory.Budget | None) -> memory.Budget:
    return budget or memory.Budget.for_device(_device(model))


def _hidden_batches(
    model: Any, seqs: Sequence[Encoded], pad: int, budget: memory.Budget | None, copies: int
) -> Iterator[tuple[tuple[int, ...], Any, Any, Callable[[Any], Any], int]]:
    """Per micro-batch: (indices, last hidden states (b, w, H), input ids, logits function, chunk rows)."""
    import torch

    shape = memory.Shape.of(model)
    plan = memory.plan([len(s.ids) for s in seqs], shape, _budget(model, budget), copies)
    memory.current().plan_used(plan, shape.vocab)
    context, backbone, head, config = _parts(model)
    device = _device(model)
    logits = _Head(head, config, context, plan.chunk_rows)
    model.eval()
    for batch, width in zip(plan.batches, plan.widths, strict=True):
        rows = [seqs[i].ids for i in batch]
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
        attn = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
        # the context is left before yielding: two models' batches may interleave (kl_per_token)
        with torch.no_grad(), context():
            hidden = backbone(input_ids=ids, attention_mask=attn, use_cache=False).last_hidden_state
        yield batch, hidden, ids, logits, plan.chunk_rows


# ---------------------------------------------------------------- log-probs


def token_logps(
    model: Any, tokenizer: Any, seqs: Sequence[Encoded], budget: memory.Budget | None = None
) -> list[list[float]]:
    """Per sequence: log π(token | the tokens before it) for each completion token.

    Only completion positions go through the LM head, `chunk_rows` at a time: logit - logsumexp, in
    float32, in place in the head's buffer: never a full-vocabulary log-softmax of the batch."""
    import torch

    out: list[list[float]] = [[] for _ in seqs]
    if not seqs:
        return out
    record = memory.current()
    for batch, hidden, ids, logits, chunk_rows in _hidden_batches(
        model, seqs, _pad_id(tokenizer), budget, memory.LOGP_COPIES
    ):
        rows, cols = [], []
        for j, i in enumerate(batch):
            first = max(seqs[i].start, 1)
            positions = range(first - 1, len(seqs[i].ids) - 1)  # position t predicts token t + 1
            rows += [j] * len(positions)
            cols += list(positions)
        if not rows:
            continue
        row_t = torch.tensor(rows, device=hidden.device)
        col_t = torch.tensor(cols, device=hidden.device)
        selected = hidden[row_t, col_t]  # (n, H): only what is scored
        targets = ids[row_t, col_t + 1]
        values = []
        with torch.no_grad():
            for start in range(0, len(rows), chunk_rows):
                chunk = logits(selected[start : start + chunk_rows])
                record.logits_allocated(chunk)
                picked = chunk.gather(-1, targets[start : start + chunk_rows, None]).squeeze(-1)
                top = chunk.amax(-1)
                total = chunk.sub_(top[:, None]).exp_().sum(-1)  # the buffer is spent: the next chunk refills it
                values.append(picked - top - total.log())
        flat = torch.cat(values).tolist()
        at = 0
        for i in batch:
            n = seqs[i].scored
            out[i] = flat[at : at + n]
            at += n
    return out


def completion_logps(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    completions: Sequence[Completion],
    cut: Truncation | None = None,
    budget: memory.Budget | None = None,
) -> list[float | None]:
    """Summed log-probability of each completion given its prompt; None where truncation leaves nothing."""
    cut = cut or truncation()
    encoded = [encode(tokenizer, p, c, cut) for p, c in zip(prompts, completions, strict=True)]
    kept = [e for e in encoded if e is not None]
    sums = iter([sum(v) for v in token_logps(model, tokenizer, kept, budget)])
    return [None if e is None else next(sums) for e in encoded]


def pair_logps(
    model: Any, tokenizer: Any, pairs: Sequence[tuple[Encoded, Encoded]], budget: memory.Budget | None = None
) -> tuple[list[float], list[float]]:
    """Summed completion log-probs of each encoded pair's chosen and rejected answer (TRL's logps)."""
    flat = [s for pair in pairs for s in pair]
    sums = [sum(v) for v in token_logps(model, tokenizer, flat, budget)]
    return sums[0::2], sums[1::2]


# ---------------------------------------------------------------- KL to the reference


def kl_per_token(
    model: Any, ref: Any, tokenizer: Any, texts: Sequence[str], cut: Truncation | None = None,
    budget: memory.Budget | None = None,
) -> float:  # fmt: skip
    """Exact token-level KL(π‖πref) over the whole vocabulary, averaged over every position of `texts`.

    Both models' full distributions are needed, so positions go through both LM heads a chunk at a time."""
    import torch

    cut = cut or truncation()
    seqs = [cut.apply(list(tokenizer(t, add_special_tokens=False)["input_ids"]), 0) for t in texts]
    seqs = [s for s in seqs if s is not None and s.ids]
    if not seqs:
        return float("nan")
    pad = _pad_id(tokenizer)
    record = memory.current()
    ref_batches = _hidden_batches(ref, seqs, pad, budget, memory.KL_COPIES)
    total, positions, scratch = 0.0, 0, None
    for batch, hidden, _, logits, chunk_rows in _hidden_batches(model, seqs, pad, budget, memory.KL_COPIES):
        _, ref_hidden, _, ref_logits, _ = next(ref_batches)  # same plan: the same shapes, the same order
        lengths = torch.tensor([len(seqs[i].ids) for i in batch])
        mask = torch.arange(hidden.shape[1])[None, :] < lengths[:, None]
        mine = hidden[mask.to(hidden.device)]
        theirs = ref_hidden[mask.to(ref_hidden.device)]
        with torch.no_grad():
            for start in range(0, mine.shape[0], chunk_rows):
                logp = logits(mine[start : start + chunk_rows])
                logq = ref_logits(theirs[start : start + chunk_rows]).to(logp.device)
                record.logits_allocated(logp)
                if scratch is None:
                    scratch = torch.empty(chunk_rows, logp.shape[1], device=logp.device, dtype=logp.dtype)
                tmp = scratch[: logp.shape[0]]
                _log_softmax_(logp, tmp)
                _log_softmax_(logq, tmp)
                diff = logq.sub_(logp).neg_()  # log p - log q
                total += torch.dot(torch.exp(logp, out=tmp).view(-1), diff.view(-1)).item()
        positions += mine.shape[0]
    return total / positions


# ---------------------------------------------------------------- generation


class Draw:
    """A logits processor that samples the next token from softmax(scores / temperature) over the whole
    vocabulary (no top-k, top-p or min-p, whatever the model's generation_config says), and leaves only
    that token finite for greedy decoding to pick.

    HF's own sampling draws with torch.multinomial, which on a CPU spends ~20 ns per vocabulary entry
    (an exponential variate each): with 151,936 tokens, most of a real-vocabulary scorecard's time.
    Here a block of BLOCK tokens is drawn by its mass, then a token within it, each by inverse CDF in
    float64: the same distribution (each token's weight exact to float32's relative precision) at a
    fifth of the cost or less, computed in the scores' own tensor (no vocabulary-wide copy)."""

    BLOCK = 256

    def __init__(self, temperature: float) -> None:
        self.temperature = temperature

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        rows, vocab = scores.shape
        weights = scores.sub_(scores.amax(dim=-1, keepdim=True)).div_(self.temperature).exp_()  # unnormalized
        whole = vocab - vocab % self.BLOCK
        masses = weights[:, :whole].reshape(rows, -1, self.BLOCK).sum(dim=-1)
        if whole < vocab:  # the last block is shorter
            masses = torch.cat([masses, weights[:, whole:].sum(dim=-1, keepdim=True)], dim=1)
        start = _inverse_cdf(masses) * self.BLOCK
        columns = start + torch.arange(self.BLOCK, device=scores.device)
        within = weights.gather(1, columns.clamp(max=vocab - 1)).masked_fill_(columns >= vocab, 0.0)
        token = start + _inverse_cdf(within)
        return scores.fill_(float("-inf")).scatter_(1, token, 0.0)


def _inverse_cdf(weights: Any) -> Any:
    """One column per row, drawn with probability weight / the row's total: (rows, 1)."""
    import torch

    cdf = weights.double().cumsum_(dim=-1)
    total = cdf[:, -1:]
    if not bool(((total > 0) & total.isfinite()).all()):  # as torch.multinomial refuses them
        raise ValueError("the next-token scores are not a distribution (NaN, infinite or all banned)")
    u = torch.rand(total.shape, dtype=torch.float64, device=cdf.device) * total
    u = torch.minimum(u, total.nextafter(torch.zeros_like(total)))  # rounding never reaches the total
    # cdf[i-1] <= u < cdf[i]: column i, never one of zero weight
    return torch.searchsorted(cdf, u, right=True)


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    max_new_tokens: int,
    samples: int = 1,
    temperature: float = 0.0,
    seed: int = 0,
    budget: memory.Budget | None = None,
) -> list[list[str]]:
    """Greedy (temperature 0) or sampled answers: one list of `samples` strings per prompt, in prompt order.

    Prompts go through generate() in batches sized by the same memory budget (prefill, KV cache, one
    row of next-token logits per sequence)."""
    import torch

    torch.manual_seed(seed)
    encoded = [prompt_ids(tokenizer, p) for p in prompts]
    shape = memory.Shape.of(model)
    plan = memory.plan_generation([len(e) for e in encoded], max_new_tokens, samples, shape, _budget(model, budget))
    memory.current().plan_used(plan, shape.vocab, generation=True)
    pad = _pad_id(tokenizer)
    device = _device(model)
    out: list[list[str]] = [[] for _ in prompts]
    model.eval()
    for batch, width in zip(plan.batches, plan.widths, strict=True):
        rows = [encoded[i] for i in batch for _ in range(samples)]  # each prompt's samples side by side
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        # greedy decoding picks the one token a sampled step leaves finite (see Draw)
        draw = [Draw(temperature)] if temperature > 0 else []
        with torch.no_grad():
            gen = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad,
                do_sample=False,
                num_return_sequences=1,  # the samples are rows of their own
                logits_processor=draw,
            )
        texts = tokenizer.batch_decode(gen[:, width:], skip_special_tokens=True)
        for j, i in enumerate(batch):
            out[i] = [t.strip() for t in texts[j * samples : (j + 1) * samples]]
    return out
