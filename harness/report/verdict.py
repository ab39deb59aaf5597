"""The decision: which trial to use, how sure that is, and what the probes warn about.

Pure functions of a StudyRecord, so the rules are tested on hand-built data.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from harness.metrics import LOWER_IS_BETTER
from harness.report.data import FAIL, RUNNING, StudyRecord, TrialRecord
from harness.report.stats import CONFIDENCE, Difference, paired_difference, seeded_difference

# ---------------------------------------------------------------- thresholds of the warnings

# shortcut.swap_acc is 0.5 for a model indifferent to the spurious phrase; below this it prefers
# the phrase over the content of the answer, i.e. it learned the shortcut.
SWAP_ACC_SHORTCUT = 0.35
# Likelihood displacement: chosen log-probs fell (overfit.chosen_logp_delta < 0) and at least this
# share of held-out pairs lost likelihood on both answers: mass went to answers nobody asked for.
BOTH_DOWN_DISPLACEMENT = 0.5
# overfit.kl_ref in nats per token on neutral texts; beyond this the policy has drifted far from
# the reference on text unrelated to the preference data.
KL_REF_BLOWUP = 1.0
# bench.retention = trial/base benchmark score; below this the edit cost general capability.
RETENTION_MIN = 0.95
# overfit.acc_gap = training minus held-out implicit-reward accuracy; above this the preferences
# were memorised rather than learned.
ACC_GAP_OVERFIT = 0.2
# identity.leak_rate: share of held-out prompts still answered with an old name.
LEAK_RATE_HIGH = 0.1

# Said of every item-only interval: it holds the eval's noise, not the training seed's.
ITEM_ONLY = "evaluation noise only: one training seed per trial, see search.replicates"

# Metrics with no better direction: a length ratio is best near 1, raw lengths and rejected-answer
# log-prob changes are context, not goals.
NO_DIRECTION = {"shortcut.length_ratio", "shortcut.answer_tokens", "overfit.rejected_logp_delta"}
# The base model's value of ratios and changes to itself, which its scorecard does not log.
BASE_BY_DEFINITION = {"bench.retention": 1.0, "shortcut.length_ratio": 1.0, "identity.logprob_margin_delta": 0.0}

# Metrics shown in the verdict's comparison table when the study produced them (objectives first).
KEY_METRICS = (
    "identity.hit_rate",
    "identity.leak_rate",
    "identity.logprob_margin",
    "identity.logprob_margin_delta",
    "bench.retention",
    "overfit.kl_ref",
    "overfit.acc_gap",
    "overfit.both_down_rate",
    "overfit.chosen_logp_delta",
    "shortcut.swap_acc",
    "shortcut.length_ratio",
)


@dataclass(frozen=True)
class Flag:
    """A plain-language warning."""

    key: str  # short id: shortcut, displacement, kl, retention, overfit, leak, ...
    title: str
    detail: str
    severe: bool = True


@dataclass
class Row:
    """One metric in the verdict table: base, recommended and runner-up, with paired intervals."""

    metric: str
    higher_is_better: bool | None  # None: the metric has no better direction
    base: float | None
    recommended: float | None
    runner_up: float | None
    vs_base: Difference | None = None
    vs_runner_up: Difference | None = None
    seeds_vs_base: Difference | None = None  # over training seeds and items (search.replicates)
    seeds_vs_runner_up: Difference | None = None


@dataclass
class Pick:
    ranking: list[TrialRecord]  # complete trials, best first
    pareto: list[TrialRecord]  # the Pareto front (multi-objective), else empty
    how: str  # how the recommendation was chosen, in words
    replicates: dict[int, list[TrialRecord]] = field(default_factory=dict)  # search trial -> its seed replicates

    @property
    def recommended(self) -> TrialRecord | None:
        return self.ranking[0] if self.ranking else None

    @property
    def runner_up(self) -> TrialRecord | None:
        return self.ranking[1] if len(self.ranking) > 1 else None

    @property
    def worst(self) -> TrialRecord | None:
        return self.ranking[-1] if len(self.ranking) > 1 else None

    def shown(self) -> list[TrialRecord]:
        """The trials shown in detail, with the seed replicates of the recommendation and its runner-up."""
        top = [t for t in (self.recommended, self.runner_up, self.worst) if t is not None]
        return top + [r for t in top[:2] for r in self.replicates.get(t.number, [])]

    def seed_runs(self, trial: TrialRecord | None) -> list[TrialRecord]:
        """A configuration's complete runs: its search trial, then its replicates by seed."""
        return [] if trial is None else [trial, *self.replicates.get(trial.number, [])]


@dataclass
class Verdict:
    pick: Pick
    status: str  # good | warn | bad: the colour of the verdict
    headline: str
    trust: list[str] = field(default_factory=list)  # sentences on noise
    rows: list[Row] = field(default_factory=list)
    flags: list[Flag] = field(default_factory=list)  # the recommended trial's
    study_flags: list[Flag] = field(default_factory=list)  # about the sweep as a whole
    badges: list[tuple[str, str]] = field(default_factory=list)  # (text, tone: good|warn|bad|plain): the gist
    notes: list[str] = field(default_factory=list)  # scorecard notes: metrics not measured and why


# ---------------------------------------------------------------- warnings


def flags(scores: dict[str, float]) -> list[Flag]:
    """The probes' warnings for one scorecard."""
    out = []
    swap = scores.get("shortcut.swap_acc")
    if swap is not None and swap < SWAP_ACC_SHORTCUT:
        out.append(
            Flag(
                "shortcut",
                "Shortcut learned",
                f"shortcut.swap_acc = {swap:.2f} (< {SWAP_ACC_SHORTCUT}): when the spurious phrase is moved to the "
                "rejected answer, the model prefers the phrase over the content. It learned the phrase, not the "
                "preference.",
            )
        )
    delta, both = scores.get("overfit.chosen_logp_delta"), scores.get("overfit.both_down_rate")
    if delta is not None and both is not None and delta < 0 and both >= BOTH_DOWN_DISPLACEMENT:
        out.append(
            Flag(
                "displacement",
                "Likelihood displacement",
                f"Log-probability of chosen answers fell ({delta:+.2f}) and {both:.0%} of held-out pairs lost "
                "likelihood on both answers: probability mass moved to answers nobody asked for.",
            )
        )
    kl = scores.get("overfit.kl_ref")
    if kl is not None and kl > KL_REF_BLOWUP:
        out.append(
            Flag(
                "kl",
                "KL blow-up",
                f"overfit.kl_ref = {kl:.2f} nats/token (> {KL_REF_BLOWUP}): the model drifted far from the "
                "reference even on neutral text. Try a larger β or a smaller learning rate.",
            )
        )
    kept = scores.get("bench.retention")
    if kept is not None and kept < RETENTION_MIN:
        out.append(
            Flag(
                "retention",
                "Capability loss",
                f"bench.retention = {kept:.2f} (< {RETENTION_MIN}): benchmark scores dropped "
                f"{1 - kept:.0%} against the base model.",
            )
        )
    gap = scores.get("overfit.acc_gap")
    if gap is not None and gap > ACC_GAP_OVERFIT:
        out.append(
            Flag(
                "overfit",
                "Overfitting",
                f"overfit.acc_gap = {gap:.2f} (> {ACC_GAP_OVERFIT}): preferences are ranked right on training "
                "pairs far more often than on held-out pairs.",
            )
        )
    leak = scores.get("identity.leak_rate")
    if leak is not None and leak > LEAK_RATE_HIGH:
        out.append(
            Flag(
                "leak",
                "Old name still given",
                f"identity.leak_rate = {leak:.0%}: the model still answers with an old name on some held-out prompts.",
                severe=False,
            )
        )
    return out


def higher_is_better(metric: str, record: StudyRecord | None = None) -> bool | None:
    """The metric's better direction (the study's own for its objectives); None where there is none."""
    if record is not None and metric in record.objectives:
        return record.directions[record.objectives.index(metric)] == "maximize"
    if metric in NO_DIRECTION:
        return None
    return metric not in LOWER_IS_BETTER


# ---------------------------------------------------------------- the pick


def pick(record: StudyRecord) -> Pick:
    """Seed replicates are not candidates of their own: they say how far their search trial's score holds."""
    complete = [t for t in record.complete if t.replicate_of is None]
    replicates: dict[int, list[TrialRecord]] = {}
    for t in sorted((t for t in record.complete if t.replicate_of is not None), key=lambda t: (t.seed or 0, t.number)):
        replicates.setdefault(t.replicate_of, []).append(t)
    if not complete:
        return Pick([], [], "no trial completed")
    chosen = _pick_pareto(record, complete) if record.multi else _pick_single(record, complete, replicates)
    chosen.replicates = replicates
    return chosen


def _constrained(complete: list[TrialRecord]) -> tuple[list[TrialRecord], str]:
    """The trials the pick may come from: those meeting the spec's constraints, when any does."""
    if not any(t.constraints for t in complete):
        return complete, ""
    feasible = [t for t in complete if t.feasible]
    names = sorted({c for t in complete for c in t.constraints})
    if not feasible:
        return complete, f"; no trial meets the constraints ({', '.join(names)}), so all are ranked"
    return feasible, f" that meet the constraints ({', '.join(names)}: {len(feasible)} of {len(complete)})"


def _pick_single(record: StudyRecord, complete: list[TrialRecord], replicates: dict[int, list[TrialRecord]]) -> Pick:
    sign = -1.0 if record.directions[0] == "maximize" else 1.0
    candidates, constraint_note = _constrained(complete)
    rest = [t for t in complete if t not in candidates]

    def mean_over_seeds(t: TrialRecord) -> float:
        runs = [t, *replicates.get(t.number, [])]
        return sum(r.values[0] for r in runs) / len(runs)

    def order(trials: list[TrialRecord]) -> list[TrialRecord]:
        # replicated configurations first, by their mean over seeds: the best single run is an optimistic
        # estimate (the winner's curse); their means are not
        return sorted(
            trials,
            key=lambda t: (t.number not in replicates, sign * mean_over_seeds(t), len(flags(t.scores)), t.number),
        )

    ranking = order(candidates) + order(rest)
    metric, best = record.objectives[0], ranking[0].values[0]
    how = f"best {metric} ({record.directions[0]}) among {len(candidates)} complete trial{_s(candidates)}"
    how += constraint_note
    replicated = [t for t in candidates if t.number in replicates]
    if replicated:
        seeds = 1 + max(len(replicates[t.number]) for t in replicated)
        how += (
            f"; the {len(replicated)} best were re-trained with new seeds (up to {seeds} seeds each) and are ranked "
            f"by their mean {metric} over seeds"
        )
    tied = [t for t in candidates if t.values[0] == best]
    if len(tied) > 1 and not replicated:
        how += (
            f"; {len(tied)} trials tie at {_num(best)}, so the one with the fewest probe warnings was picked "
            "(then the earliest)"
        )
    return Pick(ranking, [], how + ".")


def _pick_pareto(record: StudyRecord, complete: list[TrialRecord]) -> Pick:
    """The Pareto trial closest to the ideal point, each objective scaled to [0, 1] over complete trials."""
    candidates, constraint_note = _constrained(complete)
    front = pareto_front(candidates, record.directions)
    distance = _ideal_distances(complete, record.directions)
    on_front = {t.number for t in front}
    ranking = sorted(
        complete, key=lambda t: (t.number not in on_front, t not in candidates, distance[t.number], t.number)
    )
    how = (
        f"the Pareto front holds {len(front)} of {len(candidates)} complete trials{constraint_note}; the "
        "recommendation is the front's trial closest to the ideal point, with each objective scaled to 0-1 over "
        "the complete trials and weighted equally."
    )
    return Pick(ranking, sorted(front, key=lambda t: distance[t.number]), how)


def pareto_front(trials: list[TrialRecord], directions: list[str]) -> list[TrialRecord]:
    """Trials no other trial dominates (at least as good on all objectives, better on one)."""
    signs = [1.0 if d == "maximize" else -1.0 for d in directions]

    def oriented(t: TrialRecord) -> list[float]:
        return [s * v for s, v in zip(signs, t.values or [], strict=True)]

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x >= y for x, y in zip(a, b, strict=True)) and a != b

    points = {t.number: oriented(t) for t in trials}
    return [t for t in trials if not any(dominates(points[o.number], points[t.number]) for o in trials)]


def _ideal_distances(trials: list[TrialRecord], directions: list[str]) -> dict[int, float]:
    goodness: dict[int, list[float]] = {t.number: [] for t in trials}
    for i, direction in enumerate(directions):
        values = [t.values[i] for t in trials]
        low, high = min(values), max(values)
        for t in trials:
            scaled = 1.0 if high == low else (t.values[i] - low) / (high - low)
            goodness[t.number].append(scaled if direction == "maximize" else 1.0 - scaled)
    return {n: math.sqrt(sum((1 - g) ** 2 for g in gs)) for n, gs in goodness.items()}


# ---------------------------------------------------------------- the verdict


def assess(record: StudyRecord, chosen: Pick) -> Verdict:
    """Needs the shown trials' items (data.attach_artifacts) for the noise intervals."""
    best = chosen.recommended
    study_flags = _study_flags(record, chosen)
    if best is None:
        return Verdict(chosen, "bad", _no_pick_headline(record), study_flags=study_flags)
    rows = [_row(record, m, best, chosen.runner_up, chosen) for m in _shown_metrics(record, best)]
    trust = _trust(record, chosen, rows)
    best_flags = flags(best.scores)
    beats_base = _beats_base(record, rows)
    status = "bad" if beats_base is False else "warn" if any(f.severe for f in best_flags) else "good"
    if beats_base is False:
        study_flags.insert(
            0,
            Flag(
                "no-gain",
                "Not better than the base model",
                f"Trial {best.number} does not beat the base model beyond evaluation noise on the objective.",
            ),
        )
    badges = _badges(rows[0] if rows else None, chosen.runner_up is not None, best_flags)
    headline = f"Keep the base model (best trial: {best.number})" if beats_base is False else f"Use trial {best.number}"
    return Verdict(chosen, status, headline, trust, rows, best_flags, study_flags, badges, score_notes(record, best))


def score_notes(record: StudyRecord, trial: TrialRecord) -> list[str]:
    """The scorecard notes of a trial and of the base model, each said once."""
    notes = [f"trial {trial.number}: {n}" for n in trial.score_notes or []]
    notes += [f"base model: {n}" for n in record.base_notes]
    return list(dict.fromkeys(notes))


def _badges(row: Row | None, has_runner: bool, best_flags: list[Flag]) -> list[tuple[str, str]]:
    """The verdict at a glance: against the base, against the runner-up, and the probes."""
    out = []
    vs_base = None if row is None else row.seeds_vs_base or row.vs_base
    if row is not None and vs_base is not None:
        better = (vs_base.delta > 0) == row.higher_is_better
        if not vs_base.significant:
            out.append((f"{row.metric}: no better than the base model (within noise)", "bad"))
        else:
            out.append(
                (f"{row.metric}: {'better' if better else 'worse'} than the base model", "good" if better else "bad")
            )
    if row is not None and has_runner and row.seeds_vs_runner_up is not None:
        d = row.seeds_vs_runner_up
        out.append(
            (f"{row.metric}: ahead of the runner-up beyond seed noise", "good")
            if d.significant
            else (f"{row.metric}: winner within seed noise of the runner-up", "warn")
        )
    elif row is not None and has_runner:
        d = row.vs_runner_up
        if d is None:
            out.append((f"{row.metric}: gap to the runner-up has no interval", "plain"))
        else:
            out.append(
                (f"{row.metric}: ahead of the runner-up beyond noise", "good")
                if d.significant
                else (f"{row.metric}: tied with the runner-up (within noise)", "plain")
            )
    severe = [f for f in best_flags if f.severe]
    out.append(
        (f"{len(severe)} probe warning{'' if len(severe) == 1 else 's'}", "warn")
        if severe
        else ("no probe warning", "good")
    )
    return out


def _shown_metrics(record: StudyRecord, best: TrialRecord) -> list[str]:
    bench = sorted(k for k in best.scores if k.startswith("bench.") and k.endswith(".acc"))
    names = [*record.objectives, *KEY_METRICS[:5], *bench, *KEY_METRICS[5:]]
    return [m for m in dict.fromkeys(names) if m in best.scores]


def _row(
    record: StudyRecord, metric: str, best: TrialRecord, runner: TrialRecord | None, chosen: Pick | None = None
) -> Row:
    row = Row(
        metric,
        higher_is_better(metric, record),
        {**BASE_BY_DEFINITION, **record.base_scores}.get(metric),
        best.scores.get(metric),
        runner.scores.get(metric) if runner else None,
    )
    key = item_key(metric, best.scores, best.items or {})
    if key is not None:
        row.vs_base = paired_difference(best.items[key], record.base_items.get(key, []))
        if runner is not None:
            row.vs_runner_up = paired_difference(best.items[key], (runner.items or {}).get(key, []))
    if chosen is not None and chosen.replicates.get(best.number):
        _seed_rows(row, record, key, chosen.seed_runs(best), chosen.seed_runs(runner))
    return row


def _seed_rows(
    row: Row, record: StudyRecord, key: str | None, best: list[TrialRecord], runner: list[TrialRecord]
) -> None:
    """The seed-aware intervals: per-item scores of every seed where all have them, else the metric's values."""

    def scores(runs: list[TrialRecord]) -> list[list[float]] | None:
        per_item = [(r.items or {}).get(key or "", []) for r in runs]
        if key and all(per_item) and len({len(x) for x in per_item}) == 1:
            return per_item
        values = [r.scores.get(row.metric) for r in runs]
        return None if any(v is None for v in values) else [[float(v)] for v in values]  # type: ignore[arg-type]

    mine = scores(best)
    if mine is None:
        return
    base_items = record.base_items.get(key or "", [])
    if len(mine[0]) > 1 and len(base_items) == len(mine[0]):
        row.seeds_vs_base = seeded_difference(mine, [base_items])
    elif row.base is not None:
        row.seeds_vs_base = seeded_difference([[sum(m) / len(m)] for m in mine], [[row.base]])
    theirs = scores(runner) if len(runner) > 1 else None
    if theirs is not None:
        if len(theirs[0]) != len(mine[0]):  # one side without items: compare the metric's values
            mine, theirs = [[sum(m) / len(m)] for m in mine], [[sum(t) / len(t)] for t in theirs]
        row.seeds_vs_runner_up = seeded_difference(mine, theirs)


def item_key(metric: str, scores: dict[str, float], items: dict[str, list[float]]) -> str | None:
    """The scorecard_items.json key holding a metric's per-item scores (bench.<task> holds its headline metric)."""
    if metric in items:
        return metric
    from harness.scoring.bench import primary_metric

    for key in items:
        task = key.removeprefix("bench.")
        if key.startswith("bench.") and primary_metric(scores, task) == metric:
            return key
    return None


def _beats_base(record: StudyRecord, rows: list[Row]) -> bool | None:
    """Whether the pick beats the base on the first objective beyond noise (None: cannot tell)."""
    row = next((r for r in rows if r.metric == record.objectives[0]), None)
    d = None if row is None else row.seeds_vs_base or row.vs_base
    if row is None or d is None:
        return None
    return d.low > 0 if row.higher_is_better else d.high < 0


def _trust(record: StudyRecord, chosen: Pick, rows: list[Row]) -> list[str]:
    best, runner = chosen.recommended, chosen.runner_up
    level = f"{CONFIDENCE:.0%}"
    out = []
    for row in (r for r in rows if r.metric in record.objectives):
        if row.seeds_vs_base is not None:
            out += _seed_sentences(row, best, runner, level)
            continue
        out.append(_against_base(row, level))
        if runner is not None:
            out.append(_against_runner(row, best.number, runner.number, level))
    return [s for s in out if s]


def _over(d: Difference) -> str:
    items = f" and {d.items} eval items" if d.items > 1 else " (no per-item scores)"
    return f"{d.seeds[0]} training seeds{items}"


def _seed_sentences(row: Row, best_trial: TrialRecord, runner_trial: TrialRecord | None, level: str) -> list[str]:
    """What the seed replicates say: the spread, against the base, and whether the winner is within seed noise.

    Configurations are named by the params that tell them apart ("data.source = onpolicy"), so a comparison
    of recipes or settings reads as one."""
    d = row.seeds_vs_base
    assert d is not None
    best = f"{best_trial.number}{_differing(best_trial, runner_trial)}"
    runner = None if runner_trial is None else f"{runner_trial.number}{_differing(runner_trial, best_trial)}"
    spread = ", ".join(_num(v) for v in d.spread)
    out = [
        f"The configuration of trial {best}, trained with {d.seeds[0]} seeds, scores {row.metric} {spread} (one per "
        "seed)."
    ]
    noise = "beyond seed and evaluation noise" if d.significant else "within seed and evaluation noise"
    out.append(
        f"Against the base model, its mean {row.metric} changes by {_signed(d.delta)} ({level} interval "
        f"{_interval(d)} over {_over(d)}): {noise}."
    )
    r = row.seeds_vs_runner_up
    if runner is None:
        return out
    if r is None:
        out.append(
            f"Runner-up trial {runner} was not re-trained with other seeds, so whether trial {best_trial.number} beats "
            "it beyond seed noise cannot be told (raise search.replicates.top_k)."
        )
    elif r.low == r.high == 0:
        out.append(
            f"The configurations of trial {best} and of runner-up trial {runner} score the same {row.metric} on every "
            f"seed and item ({_over(r)} each): no winner beyond seed noise; treat them as equally good."
        )
    elif r.significant:
        out.append(
            f"The configuration of trial {best} beats that of runner-up trial {runner} by {_signed(r.delta)} on mean "
            f"{row.metric} ({level} interval {_interval(r)} over {_over(r)} each): beyond seed noise."
        )
    else:
        out.append(
            f"The winner is within seed noise: the configurations of trial {best} and of runner-up trial {runner} "
            f"differ by {_signed(r.delta)} on mean {row.metric} ({level} interval {_interval(r)} over {_over(r)} "
            "each), so another seed could reverse them; treat them as equally good."
        )
    return out


def _differing(trial: TrialRecord, other: TrialRecord | None) -> str:
    """' (p = v, ...)': the params where `trial` differs from `other` ('' when none or no other)."""
    if other is None:
        return ""
    keys = [k for k in trial.params if trial.params.get(k) != other.params.get(k)]
    shown = ", ".join(
        f"{k} = {_num(v) if isinstance(v, float) else v}" for k, v in ((k, trial.params[k]) for k in keys)
    )
    return f" ({shown})" if shown else ""


def _against_base(row: Row, level: str) -> str:
    d = row.vs_base
    if d is None:
        if row.base is None or row.recommended is None:
            return ""
        change = f"{_num(row.base)} → {_num(row.recommended)}"
        return f"Against the base model, {row.metric} goes {change} (no per-item scores, so no interval)."
    noise = "beyond evaluation noise" if d.significant else "within evaluation noise"
    interval = f"{level} interval {_interval(d)} over {d.items} items; {ITEM_ONLY}"
    return f"Against the base model, {row.metric} changes by {_signed(d.delta)} ({interval}): {noise}."


def _against_runner(row: Row, best: int, runner: int, level: str) -> str:
    d = row.vs_runner_up
    if d is None:
        gap = None if row.recommended is None or row.runner_up is None else row.recommended - row.runner_up
        size = f" ({_signed(gap)})" if gap is not None else ""
        return (
            f"Whether the gap to runner-up trial {runner} on {row.metric}{size} exceeds the evaluation noise "
            "cannot be told: this metric has no per-item scores."
        )
    interval = f"{level} interval {_interval(d)}; {ITEM_ONLY}"
    if d.significant:
        return (
            f"Trial {best} differs from runner-up trial {runner} on {row.metric} by {_signed(d.delta)} "
            f"({interval}): beyond evaluation noise."
        )
    return (
        f"Trial {best} and runner-up trial {runner} differ by {_signed(d.delta)} on {row.metric} ({interval}): "
        "within evaluation noise, so treat them as equally good on it."
    )


def _study_flags(record: StudyRecord, chosen: Pick) -> list[Flag]:
    out = []
    total, failed = len(record.trials), record.by_state(FAIL)
    if failed:
        reasons = Counter(_short(t.reason) for t in failed).most_common(1)[0][0]
        out.append(
            Flag(
                "failed",
                f"{len(failed)} of {total} trials failed",
                f"Most common reason: {reasons}. See Failures below."
                + (
                    " Fix the cause and run the same sweep command again: it resumes the study."
                    if len(failed) == total
                    else ""
                ),
                severe=len(failed) == total,
            )
        )
    if len(chosen.ranking) == 1:
        out.append(
            Flag(
                "one",
                "Only one complete trial",
                "Nothing to compare it against: run more trials before trusting the settings.",
                severe=False,
            )
        )
    flat = all(len({t.values[i] for t in chosen.ranking}) == 1 for i in range(len(record.objectives)))
    if len(chosen.ranking) > 1 and flat:
        out.append(
            Flag(
                "flat",
                "The objective does not separate the trials",
                f"every complete trial scores {_objective_values(record, chosen.ranking[0])}; the pick rests on the "
                "tie-break. A harder eval or other metrics are needed to choose.",
                severe=False,
            )
        )
    complete = record.complete
    if any(t.constraints for t in complete) and not any(t.feasible for t in complete):
        out.append(
            Flag(
                "infeasible",
                "No trial meets the constraints",
                "the recommendation is the best of trials that all break the spec's constraints; widen the "
                "search space or relax the constraints.",
                severe=True,
            )
        )
    out += _data_flags(record)
    running = record.by_state(RUNNING)
    if running:
        out.append(
            Flag("running", f"{len(running)} trial{_s(running)} still running", "this report is provisional.", False)
        )
    return out


def _data_flags(record: StudyRecord) -> list[Flag]:
    """What the data audit (harness.audit, at sweep start) found that a model would learn besides the content."""
    out = []
    for source in record.audit:
        found = [w for w in source.get("warnings", []) if "a shortcut to learn" in w or "length preference" in w]
        if found:
            title = f"Data source '{source.get('name')}' teaches more than the content"
            out.append(Flag("data", title, " ".join(f"{w}." for w in found), severe=False))
    return out


def _objective_values(record: StudyRecord, trial: TrialRecord) -> str:
    return ", ".join(f"{m} = {_num(v)}" for m, v in zip(record.objectives, trial.values, strict=True))


def _no_pick_headline(record: StudyRecord) -> str:
    if not record.trials:
        return "No recommendation: the study has no trials yet"
    return f"No recommendation: none of the {len(record.trials)} trials completed"


def _short(reason: str | None) -> str:
    text = (reason or "no reason recorded").strip().splitlines()[0] if reason else "no reason recorded"
    return text if len(text) <= 160 else text[:157] + "..."


def _s(items: list) -> str:
    return "" if len(items) == 1 else "s"


def _num(value: float) -> str:
    return f"{value:.3g}"


def _signed(value: float) -> str:
    return f"{value:+.3g}"


def _interval(d: Difference) -> str:
    return f"[{d.low:+.3g}, {d.high:+.3g}]"
