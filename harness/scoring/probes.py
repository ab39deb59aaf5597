"""Overfitting and shortcut probes: is the preference learned, or memorised, or a shortcut?

All of them compare the trained policy π with its reference πref (the model DPO started from).
Implicit rewards are reported in log-ratio units, r = log π(y|x) - log πref(y|x), i.e. TRL's
rewards divided by β, so they compare across trials with different β.
"""

from __future__ import annotations

from typing import Any

from harness.scoring import lm

MAX_TRAIN_PAIRS = 256  # enough for a stable training accuracy; bounded cost per checkpoint


def log_ratios(model: Any, ref: Any, tokenizer: Any, pairs: list[dict]) -> tuple[list[float], list[float]]:
    """Per pair: log π/πref of the chosen and of the rejected answer."""
    prompts = [p["prompt"] for p in pairs]
    deltas = []
    for key in ("chosen", "rejected"):
        completions = [p[key] for p in pairs]
        policy = lm.completion_logps(model, tokenizer, prompts, completions)
        reference = lm.completion_logps(ref, tokenizer, prompts, completions)
        deltas.append([a - b for a, b in zip(policy, reference, strict=True)])
    return deltas[0], deltas[1]


def _accuracy(chosen: list[float], rejected: list[float]) -> float:
    return sum(c > r for c, r in zip(chosen, rejected, strict=True)) / max(1, len(chosen))


def _mean(values: list[float]) -> float:
    return sum(values) / max(1, len(values))


def overfit(
    model: Any, ref: Any, tokenizer: Any, train: list[dict], heldout: list[dict], texts: list[str]
) -> dict[str, float]:
    """overfit.*: the train/held-out accuracy gap, likelihood displacement and drift from the reference."""
    tc, tr = log_ratios(model, ref, tokenizer, train[:MAX_TRAIN_PAIRS])
    hc, hr = log_ratios(model, ref, tokenizer, heldout)
    metrics = {
        "overfit.train_acc": _accuracy(tc, tr),
        "overfit.heldout_acc": _accuracy(hc, hr),
        "overfit.heldout_logratio_margin": _mean([c - r for c, r in zip(hc, hr, strict=True)]),
        "overfit.chosen_logp_delta": _mean(hc),
        "overfit.rejected_logp_delta": _mean(hr),
        "overfit.both_down_rate": _mean([float(c < 0 and r < 0) for c, r in zip(hc, hr, strict=True)]),
        "overfit.kl_ref": kl_ref(model, ref, tokenizer, texts),
    }
    metrics["overfit.acc_gap"] = metrics["overfit.train_acc"] - metrics["overfit.heldout_acc"]
    return metrics


def kl_ref(model: Any, ref: Any, tokenizer: Any, texts: list[str]) -> float:
    """Exact token-level KL(π‖πref) over the whole vocabulary, averaged over every position of `texts`."""
    import torch

    total, positions = 0.0, 0
    for text in texts:
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]], device=model.device)
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits.float(), -1)
            logq = torch.log_softmax(ref(input_ids=ids.to(ref.device)).logits.float().to(logp.device), -1)
        total += (logp.exp() * (logp - logq)).sum(-1).sum().item()
        positions += ids.shape[1]
    return total / max(1, positions)


def swap_accuracy(model: Any, ref: Any, tokenizer: Any, swap_pairs: list[dict]) -> float:
    """Implicit-reward accuracy when the spurious phrase sits on the rejected side: well below 0.5
    means the model rewards the phrase, not the content."""
    chosen, rejected = log_ratios(model, ref, tokenizer, swap_pairs)
    return _accuracy(chosen, rejected)


def answer_lengths(model: Any, tokenizer: Any, prompts: list, max_new_tokens: int) -> tuple[float, list[str]]:
    """Mean greedy answer length in tokens, and the answers."""
    answers = [g[0] for g in lm.generate(model, tokenizer, prompts, max_new_tokens)]
    lengths = [len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers]
    return _mean([float(n) for n in lengths]), answers
