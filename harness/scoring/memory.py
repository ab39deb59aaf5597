"""Scoring memory by design: which sequences go through the model together, and how many positions
go through its LM head at once.

A forward pass without gradients holds the weights (not ours to plan), the activations of one
micro-batch, and the logits. With modern vocabularies the logits dominate: 151,936 float32 values are
0.6 MB per position, so scoring 32 sequences of 578 tokens at once (and a log-softmax copy) needs 11 GB.
So logits are computed for a bounded chunk of positions at a time (`chunk_rows`), and micro-batches
are sized by padded tokens so that their activations stay inside a budget too. A plan is plain data:
tests assert its bounds instead of timing anything.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

MIB = 2**20
# One chunk of float32 logits and its temporaries. 64 MiB is ~55 positions of a 151,936-token vocabulary
# for log-probs: the LM head's matrix product is already large enough to run at full speed, and the
# chunk is noise next to the weights of any real model.
LOGIT_BYTES = 64 * MIB
# Activations of one micro-batch (a cap; an eighth of the device's memory when that is less). A GPU gets
# more so that it is kept busy; on a CPU, wide batches buy nothing. Total, not free, memory: the same
# machine always gets the same plan, so scores do not depend on what else was running.
ACTIVATION_BYTES = {"cuda": 2048 * MIB, "cpu": 512 * MIB}
# Vocabulary-wide buffers of one chunk alive at once, per use (scoring.lm reuses them chunk after chunk;
# a model-dtype buffer counted as a float32 one):
LOGP_COPIES = 2  # float32 logits (logsumexp in place), the head's output in the model's dtype
KL_COPIES = 5  # both models' float32 logits (log-softmax in place), the exponentials, two model-dtype outputs
GENERATE_COPIES = 4  # the model's logits, next-token scores, 2 for processors' copies (a repetition_penalty's)


@dataclass(frozen=True)
class Shape:
    """What planning needs to know about a model."""

    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    dtype_bytes: int

    @classmethod
    def of(cls, model: Any) -> Shape:
        """The shape of a transformers causal LM (or a PEFT model, or a wrapper with `.model`)."""
        inner = model
        while not hasattr(inner, "config") and hasattr(inner, "model"):
            inner = inner.model
        config = inner.config.get_text_config() if hasattr(inner.config, "get_text_config") else inner.config
        hidden = config.hidden_size
        heads = config.num_attention_heads
        param = next(inner.parameters())
        return cls(
            vocab=config.vocab_size,
            hidden=hidden,
            intermediate=getattr(config, "intermediate_size", None) or 4 * hidden,
            layers=config.num_hidden_layers,
            heads=heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or hidden // heads,
            dtype_bytes=param.element_size(),
        )

    def token_bytes(self, width: int) -> int:
        """Activations per token of a forward pass over sequences `width` tokens wide (an estimate).

        Inside one decoder layer: the residual stream, its norm, q/k/v, the attention output and the
        MLP's gate, up and product (~8 hidden + 4 intermediate values), plus one row of float32
        attention scores per head (eager and math attention materialise them)."""
        return self.dtype_bytes * (8 * self.hidden + 4 * self.intermediate) + 4 * self.heads * width

    def kv_bytes(self) -> int:
        """KV cache per token (generation)."""
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes

    def logit_row_bytes(self, copies: int) -> int:
        return self.vocab * 4 * copies


@dataclass(frozen=True)
class Budget:
    activation_bytes: int  # one micro-batch's activations
    logit_bytes: int = LOGIT_BYTES  # one chunk of logits and its temporaries

    @classmethod
    def for_device(cls, device: Any) -> Budget:
        kind = getattr(device, "type", str(device)).split(":")[0]
        cap = ACTIVATION_BYTES.get(kind, ACTIVATION_BYTES["cpu"])
        total = _total_bytes(device, kind)
        return cls(min(cap, total // 8) if total else cap)


def _total_bytes(device: Any, kind: str) -> int | None:
    try:
        if kind == "cuda":
            import torch

            return int(torch.cuda.get_device_properties(device).total_memory)
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:  # no psutil, an odd device: the cap alone then
        return None


@dataclass(frozen=True)
class BatchPlan:
    """Micro-batches (indices into the sequences given) and the LM-head chunk size for one scoring call."""

    batches: tuple[tuple[int, ...], ...]
    widths: tuple[int, ...]  # padded width of each micro-batch
    chunk_rows: int  # positions whose logits exist at once
    logit_bytes: int  # those logits with their temporaries: the plan's logit peak
    activation_bytes: int  # the largest micro-batch's estimated activations
    budget: Budget

    @property
    def largest_batch_tokens(self) -> int:
        return max((len(b) * w for b, w in zip(self.batches, self.widths, strict=True)), default=0)


def _longest_first(lengths: Sequence[int], fits: Callable[[int, int], bool]) -> tuple[list[tuple[int, ...]], list[int]]:
    """Greedy micro-batches, longest sequence first (it sets the batch's padded width): a batch grows
    while `fits(size, width)`; a sequence that does not fit even alone still goes alone."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[tuple[int, ...]] = []
    current: list[int] = []
    for i in order:
        if current and not fits(len(current) + 1, lengths[current[0]]):
            batches.append(tuple(current))
            current = []
        current.append(i)
    if current:
        batches.append(tuple(current))
    return batches, [lengths[b[0]] for b in batches]


def plan(lengths: Sequence[int], shape: Shape, budget: Budget, copies: int = LOGP_COPIES) -> BatchPlan:
    """Group sequences, longest first, into micro-batches whose activations fit `budget.activation_bytes`.

    A sequence too long to fit on its own still goes alone (truncation to max_length bounds it)."""

    def cost(n: int, width: int) -> int:
        return n * width * shape.token_bytes(width)

    batches, widths = _longest_first(lengths, lambda n, w: cost(n, w) <= budget.activation_bytes)
    largest = max((cost(len(b), w) for b, w in zip(batches, widths, strict=True)), default=0)
    rows = max(1, budget.logit_bytes // shape.logit_row_bytes(copies))
    return BatchPlan(tuple(batches), tuple(widths), rows, rows * shape.logit_row_bytes(copies), largest, budget)


def plan_generation(
    prompt_lengths: Sequence[int], max_new_tokens: int, samples: int, shape: Shape, budget: Budget
) -> BatchPlan:
    """Prompts per generate() call: the prefill's activations, the KV cache of prompt + answer, and one
    row of next-token logits per returned sequence must fit the budget."""
    per_row = shape.logit_row_bytes(GENERATE_COPIES)
    max_rows = max(1, budget.logit_bytes // per_row)  # sequences decoded together

    def cost(n: int, width: int) -> int:
        prefill = n * samples * width * shape.token_bytes(width)
        return prefill + n * samples * (width + max_new_tokens) * shape.kv_bytes()

    batches, widths = _longest_first(
        prompt_lengths, lambda n, w: n * samples <= max_rows and cost(n, w) <= budget.activation_bytes
    )
    largest_rows = max((len(b) * samples for b in batches), default=0)
    largest = max((cost(len(b), w) for b, w in zip(batches, widths, strict=True)), default=0)
    return BatchPlan(tuple(batches), tuple(widths), largest_rows, largest_rows * per_row, largest, budget)


# ---------------------------------------------------------------- what scoring actually allocated


@dataclass
class Record:
    """The largest micro-batch and logit chunk one scorecard used: logged with it (scoring_memory.json)."""

    budget: dict[str, int] = field(default_factory=dict)
    calls: int = 0
    largest_micro_batch_tokens: int = 0
    largest_micro_batch_sequences: int = 0
    largest_logit_tensor_bytes: int = 0  # the biggest logits tensor actually allocated
    planned_logit_bytes: int = 0  # the plans' bound on it with its temporaries
    unchunked_logit_bytes: int = 0  # what whole-batch float32 logits + log-softmax would have needed

    def plan_used(self, plan: BatchPlan, vocab: int, generation: bool = False) -> None:
        self.calls += 1
        self.budget = asdict(plan.budget)
        self.largest_micro_batch_tokens = max(self.largest_micro_batch_tokens, plan.largest_batch_tokens)
        sizes = [len(b) for b in plan.batches]
        self.largest_micro_batch_sequences = max(self.largest_micro_batch_sequences, *sizes, 0)
        self.planned_logit_bytes = max(self.planned_logit_bytes, plan.logit_bytes)
        if generation:  # generate() keeps one row of logits per sequence: nothing unchunked to compare with
            return
        # the unplanned way: batches of 32 padded to the longest sequence, float32 logits plus a log-softmax copy
        legacy = min(32, sum(sizes)) * max(plan.widths, default=0) * vocab * 4 * 2
        self.unchunked_logit_bytes = max(self.unchunked_logit_bytes, legacy)

    def logits_allocated(self, tensor: Any) -> None:
        self.largest_logit_tensor_bytes = max(self.largest_logit_tensor_bytes, tensor.numel() * 4)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_RECORD: contextvars.ContextVar[Record | None] = contextvars.ContextVar("scoring_memory_record", default=None)


@contextlib.contextmanager
def recording() -> Iterator[Record]:
    """Collect what every scoring call inside the block planned and allocated."""
    record = Record()
    token = _RECORD.set(record)
    try:
        yield record
    finally:
        _RECORD.reset(token)


def current() -> Record:
    """The active record (a throwaway one outside `recording`)."""
    return _RECORD.get() or Record()
