"""Names of what is measured, and which part of a spec produces them.

Scorecard metrics are `<family>.<name>`; TRL's held-out step metrics keep TRL's `eval_` names.
The spec validator uses this to reject objectives and constraints no eval would produce.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

# A scorecard's metric families, in the order people read them (a trial also logs time.*, data.*, ...)
FAMILIES = ("identity", "bench", "overfit", "shortcut")
IDENTITY = (
    "identity.hit_rate",  # greedy answers that give a new name
    "identity.leak_rate",  # greedy answers that give an old name
    "identity.logprob_margin",  # mean log-prob per token of the new name's span minus the old name's (same answer)
    "identity.logprob_margin_delta",  # that margin minus the base model's: what training changed
    "identity.logprob_win_rate",  # share of prompts where that margin is > 0 (a tie counts 1/2)
    "identity.hit_rate_sampled",  # sampled answers (k per prompt) that give a new name
    "identity.other_rate",  # greedy answers that give neither name: the old one lost, no new one gained
    "identity.degenerate_rate",  # greedy answers that repeat themselves ("Athene Athene Athene")
)
OVERFIT = (
    "overfit.acc_gap",  # implicit-reward accuracy, training minus held-out pairs, per source, share-weighted
    "overfit.train_acc",  # share-weighted over sources (ties count 1/2, as in every accuracy here)
    "overfit.heldout_acc",
    "overfit.heldout_logratio_margin",  # held-out rewards/margins / β: comparable across β
    "overfit.chosen_logp_delta",  # mean change of log π(chosen) against the reference
    "overfit.rejected_logp_delta",
    "overfit.both_down_rate",  # pairs whose chosen and rejected log-probs both fell
    "overfit.kl_ref",  # token-level KL(π‖πref) on neutral texts
)
SHORTCUT = (
    "shortcut.swap_acc",  # implicit-reward accuracy with the spurious phrase moved to rejected
    "shortcut.length_ratio",  # (greedy answer tokens + 1) / (the base model's + 1)
)
BENCH = ("bench.retention",)  # plus bench.<task>.<metric>
TRL_EVAL = (
    "eval_loss",
    "eval_rewards/chosen",
    "eval_rewards/rejected",
    "eval_rewards/accuracies",
    "eval_rewards/margins",
    "eval_logps/chosen",
    "eval_logps/rejected",
)
# Direction in which a metric improves; used to orient intermediate values for pruning.
LOWER_IS_BETTER = {
    "eval_loss",
    "identity.leak_rate",
    "identity.other_rate",
    "identity.degenerate_rate",
    "overfit.acc_gap",
    "overfit.both_down_rate",
    "overfit.kl_ref",
}

_CONSTRAINT = re.compile(r"^\s*([\w./-]+)\s*(>=|<=)\s*(-?[\d.]+(?:[eE][-+]?\d+)?)\s*$")


def produced_by(evals: dict[str, Any]) -> set[str]:
    """Metric names a spec's `evals` section produces ('bench.*' stands for any benchmark metric)."""
    names = set(TRL_EVAL)
    if evals.get("identity"):
        names |= set(IDENTITY)
    if evals.get("benchmarks"):
        names |= {*BENCH, "bench.*"}
    probes = evals.get("probes") or []
    if "overfit" in probes:
        names |= set(OVERFIT)
    if "shortcut" in probes:
        names |= set(SHORTCUT)
    return names


def is_score(name: str) -> bool:
    """A scorecard metric, not one of the costs and counts a trial logs beside it (time.*, data.*, refcache.*)."""
    return name.split(".")[0] in FAMILIES and "." in name


def is_produced(name: str, produced: set[str]) -> bool:
    return name in produced or (name.startswith("bench.") and "bench.*" in produced)


def unknown_message(name: str, produced: set[str]) -> str:
    available = sorted(n for n in produced if n != "bench.*")
    close = difflib.get_close_matches(name, available, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    family = name.split(".")[0]
    needs = {
        "identity": " (needs evals.identity)",
        "bench": " (needs evals.benchmarks)",
        "overfit": " (needs 'overfit' in evals.probes)",
        "shortcut": " (needs 'shortcut' in evals.probes)",
    }.get(family, "")
    if any(n.startswith(f"{family}.") for n in produced):
        needs = ""
    return f"no eval produces metric '{name}'{needs}.{hint} Available: {', '.join(available)}"


def parse_constraint(text: str) -> tuple[str, str, float]:
    """'bench.retention >= 0.95' -> ('bench.retention', '>=', 0.95)."""
    match = _CONSTRAINT.match(text)
    if not match:
        raise ValueError(f"cannot read constraint {text!r}; write '<metric> >= <number>' or '<metric> <= <number>'")
    return match.group(1), match.group(2), float(match.group(3))


def constraint_violation(text: str, scores: dict[str, float]) -> float:
    """Optuna's convention: <= 0 means satisfied; a missing or NaN score counts as violated (Optuna refuses NaN)."""
    name, op, bound = parse_constraint(text)
    value = scores.get(name)
    if value is None or value != value:
        return 1.0
    return bound - value if op == ">=" else value - bound
