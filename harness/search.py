"""The search: the spec's space, sampler, pruner and objectives as an Optuna study.

This is the Optuna adapter: the only module that touches Optuna's private API (heartbeats,
stale-trial detection), as harness.training is for TRL.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from harness import metrics
from harness.spec import SpecError, SweepSpec
from harness.stores import HEARTBEAT_S, open_storage, redact

SPEC_HASH_ATTR = "harness.spec_hash"


def open_study(spec: SweepSpec, storage_url: str) -> Any:
    """Create the study, or load it to resume; refuse to mix trials of a different spec."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions = [o.direction for o in spec.search.objectives]
    study = optuna.create_study(
        storage=open_storage(storage_url),
        study_name=spec.study,
        sampler=sampler(spec),
        pruner=pruner(spec),
        directions=directions,
        load_if_exists=True,
    )
    found = [d.name.lower() for d in study.directions]
    changed = found != directions or study.user_attrs.get(SPEC_HASH_ATTR, spec.spec_hash()) != spec.spec_hash()
    if changed and not study.get_trials(deepcopy=False):  # nothing ran: nothing a changed spec could conflict with
        optuna.delete_study(study_name=spec.study, storage=open_storage(storage_url))
        return open_study(spec, storage_url)
    if found != directions:
        raise SpecError(
            spec.study,
            [
                (
                    "search.objectives",
                    None,
                    f"study '{spec.study}' exists with directions {found}; use a new study name",
                )
            ],
        )
    known = study.user_attrs.get(SPEC_HASH_ATTR)
    if known is None:
        study.set_user_attr(SPEC_HASH_ATTR, spec.spec_hash())
        study.set_user_attr("objectives", [o.metric for o in spec.search.objectives])
    elif known != spec.spec_hash():
        message = (
            f"study '{spec.study}' in {redact(storage_url)} was run from a different spec (hash {known}, now "
            f"{spec.spec_hash()}); only search.trials may change on resume. Use a new study name."
        )
        raise SpecError(spec.study, [("study", None, message)])
    return study


def load_study(name: str, storage_url: str, spec: SweepSpec | None = None) -> Any:
    """An existing study, opened as `harness sweep` opens it (KeyError when there is none)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(
        study_name=name,
        storage=open_storage(storage_url),
        sampler=sampler(spec) if spec else None,
        pruner=pruner(spec) if spec else None,
    )


def study_names(storage_url: str) -> list[str]:
    import optuna

    return optuna.study.get_all_study_names(open_storage(storage_url))


def startup_trials(spec: SweepSpec) -> int:
    """Random trials before a model-based sampler takes over: half the budget, at most Optuna's 10."""
    return max(2, min(10, spec.search.trials // 2))


def sampler(spec: SweepSpec) -> Any:
    """The spec's sampler, seeded per trial (see _per_trial_seeded).

    Not the grid sampler: its seed shuffles the grid once, and trial N takes grid point N of that
    order, so it must keep the study's seed; it continues its sequence on resume by construction.
    """
    if spec.search.sampler == "grid":
        return _sampler(spec, spec.seed)
    return _per_trial_seeded(lambda seed: _sampler(spec, seed), spec.seed)


def _sampler(spec: SweepSpec, seed: int) -> Any:
    import optuna.samplers as s

    kind = spec.search.sampler
    if kind == "tpe":
        return s.TPESampler(seed=seed, n_startup_trials=startup_trials(spec))
    if kind == "random":
        return s.RandomSampler(seed=seed)
    if kind == "grid":
        grid = {name: list(dim.choice or []) for name, dim in spec.search.space.items()}
        return _GridSampler(grid, seed=seed)
    if kind == "gp":
        return s.GPSampler(seed=seed, n_startup_trials=startup_trials(spec))
    if kind == "nsga2":
        population = max(2, min(50, spec.search.trials // 2))
        return s.NSGAIISampler(seed=seed, population_size=population)
    if kind == "cmaes":
        return s.CmaEsSampler(seed=seed, n_startup_trials=startup_trials(spec))
    raise ValueError(kind)


def trial_seed(seed: int, number: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{number}".encode()).digest()[:4], "big")


def _per_trial_seeded(make: Callable[[int], Any], seed: int) -> Any:
    """A sampler whose random draws for trial N are seeded from (spec seed, N).

    Optuna's seeded samplers restart their random stream in every new process, so a resumed sweep (or
    a second worker) would repeat the first trials' points. Every Optuna sampler keeps its state in
    the study (history, CMA-ES and NSGA-II generations in trial attributes) apart from its RNG, so a
    fresh sampler per trial, seeded by the trial's number, continues the sequence exactly: a sweep
    killed and resumed draws what an uninterrupted one would have drawn.
    """
    from optuna.samplers import BaseSampler

    class PerTrialSeeded(BaseSampler):
        def __init__(self) -> None:
            self._by_trial: dict[int, Any] = {}

        def _for(self, trial: Any) -> Any:
            if trial.number not in self._by_trial:
                self._by_trial[trial.number] = make(trial_seed(seed, trial.number))
            return self._by_trial[trial.number]

        def before_trial(self, study: Any, trial: Any) -> None:
            self._for(trial).before_trial(study, trial)

        def infer_relative_search_space(self, study: Any, trial: Any) -> Any:
            return self._for(trial).infer_relative_search_space(study, trial)

        def sample_relative(self, study: Any, trial: Any, search_space: Any) -> Any:
            return self._for(trial).sample_relative(study, trial, search_space)

        def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
            return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            self._for(trial).after_trial(study, trial, state, values)
            self._by_trial.pop(trial.number, None)

        def reseed_rng(self) -> None:
            for inner in self._by_trial.values():
                inner.reseed_rng()

    return PerTrialSeeded()


def _grid_sampler_class() -> type:
    from optuna.samplers import GridSampler

    class Grid(GridSampler):
        """Optuna's grid sampler calls Study.stop() when the grid is used up, which only works inside
        study.optimize(); the harness drives trials with ask/tell and stops at the grid's size itself."""

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            return None

    return Grid


def _GridSampler(grid: dict[str, list[Any]], seed: int) -> Any:  # noqa: N802 - reads as the class it builds
    return _grid_sampler_class()(grid, seed=seed)


def grid_size(spec: SweepSpec) -> int | None:
    if spec.search.sampler != "grid":
        return None
    size = 1
    for dim in spec.search.space.values():
        size *= len(dim.choice or [])
    return size


def pruner(spec: SweepSpec) -> Any:
    import optuna.pruners as p

    cfg = spec.search.pruner
    if cfg.type == "median":
        return p.MedianPruner(n_startup_trials=2, n_warmup_steps=cfg.warmup_steps)
    if cfg.type == "hyperband":
        max_steps = int(spec.train.get("max_steps") or 100)
        return p.HyperbandPruner(min_resource=cfg.every, max_resource=max(max_steps, cfg.every))
    return p.NopPruner()


def pruner_sign(direction: str, metric: str) -> float:
    """Optuna's pruners compare intermediate values in the study's direction, so a metric that
    improves the other way is reported negated."""
    return -1.0 if (metric in metrics.LOWER_IS_BETTER) == (direction == "maximize") else 1.0


def constraints(spec: SweepSpec, scores: dict[str, float]) -> dict[str, float]:
    """Each constraint's violation (<= 0: satisfied), to record on the trial: Optuna's samplers and
    best_trial(s) then prefer feasible trials."""
    return {text: metrics.constraint_violation(text, scores) for text in spec.search.constraints}


def shown_metrics(spec: SweepSpec) -> list[str]:
    """What a trial's one-line summary shows: the objectives, then the constrained metrics."""
    names = [o.metric for o in spec.search.objectives]
    names += [metrics.parse_constraint(c)[0] for c in spec.search.constraints]
    return list(dict.fromkeys(names))


def suggest(trial: Any, spec: SweepSpec) -> dict[str, Any]:
    """Sample every searched knob for one trial, under the knob's own name."""
    params: dict[str, Any] = {}
    for name, dim in spec.search.space.items():
        if dim.float_ is not None:
            low, high = dim.float_
            params[name] = trial.suggest_float(name, low, high, log=dim.log, step=dim.step)
        elif dim.int_ is not None:
            low, high = dim.int_
            params[name] = trial.suggest_int(name, low, high, log=dim.log, step=int(dim.step or 1))
        else:
            params[name] = trial.suggest_categorical(name, dim.choice)
    return params


def objective_values(spec: SweepSpec, scores: dict[str, float]) -> list[float]:
    """The trial's values in objective order; KeyError names a metric the trial did not produce."""
    values = []
    for objective in spec.search.objectives:
        value = scores.get(objective.metric)
        if value is None or value != value:
            raise KeyError(f"objective metric '{objective.metric}' was not produced (or is NaN)")
        values.append(float(value))
    return values


def duplicate_of(study: Any, trial: Any) -> int | None:
    """The number of a finished trial that ran exactly these params, if any."""
    from optuna.trial import TrialState

    for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if other.number != trial.number and other.params == trial.params:
            return other.number
    return None


def fail_running(study: Any, frozen: Any, attrs: dict[str, Any]) -> bool:
    """Close another process's RUNNING trial as FAIL, with user attrs (its reason); False if it was
    closed meanwhile."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    try:
        for key, value in attrs.items():
            study._storage.set_trial_user_attr(frozen._trial_id, key, value)
        study.tell(frozen.number, state=TrialState.FAIL)
    except UpdateFinishedTrialError:
        return False
    return True


REASON_ATTR = "fail_reason"  # why a trial failed (or was closed by another worker)
RECORDED_FROM_ATTR = "recorded_from"  # on a trial added for a late result: the number of the trial it ran as


def record_again(
    study: Any,
    trial: Any,
    state: str,
    values: list[float] | None,
    user_attrs: dict[str, Any],
    constraints: dict[str, float],
) -> int | None:
    """Add a finished trial holding the result of `trial`, which another worker closed as FAIL while it ran
    (its worker lost the database for longer than the heartbeat grace, then came back with a result): the
    same params, attributes and intermediate values, so the search learns from it. Returns its number;
    a result already added is not added again (the recording is retried)."""
    from optuna.trial import TrialState, create_trial

    if (number := recorded_as(study, trial.number)) is not None:
        return number
    closed = study._storage.get_trial(trial._trial_id)
    attrs = {k: v for k, v in closed.user_attrs.items() if k != REASON_ATTR} | user_attrs
    new = create_trial(
        state=TrialState[state],
        values=values,
        params=closed.params,
        distributions=closed.distributions,
        user_attrs=attrs | {RECORDED_FROM_ATTR: closed.number},
        system_attrs=closed.system_attrs,  # a grid sampler's point, a multi-objective sampler's generation
        intermediate_values=closed.intermediate_values,
    )
    for key, value in constraints.items():
        if key not in new.constraints:
            new.set_constraint(key, value)
    study.add_trial(new)
    return recorded_as(study, trial.number)


def recorded_as(study: Any, number: int) -> int | None:
    """The trial holding the late result of trial `number` (record_again), if there is one."""
    for other in study.get_trials(deepcopy=False):
        if other.user_attrs.get(RECORDED_FROM_ATTR) == number:
            return other.number
    return None


def state_of(study: Any, trial: Any) -> str:
    """A trial's state as the storage holds it now (another worker may have closed it)."""
    return study._storage.get_trial(trial._trial_id).state.name


# ---------------------------------------------------------------- heartbeats (Optuna's machinery)


def heartbeats_on(study: Any) -> bool:
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return is_heartbeat_enabled(study._storage)


def beat(study: Any, trial: Any) -> None:
    """Record one heartbeat of a trial now (the first one is recorded as the trial is claimed)."""
    if heartbeats_on(study):
        study._storage.record_heartbeat(trial._trial_id)


@contextlib.contextmanager
def heartbeat(study: Any, trial: Any, on_error: Callable[[Exception], None]) -> Iterator[None]:
    """Beat every HEARTBEAT_S while the block runs. Unlike Optuna's own heartbeat thread, a failed
    beat (a database hiccup) is reported and retried instead of silently ending the beats."""
    if not heartbeats_on(study):
        yield
        return
    stop = threading.Event()

    def loop() -> None:
        failing = False
        while not stop.wait(HEARTBEAT_S):
            try:
                beat(study, trial)
                failing = False
            except Exception as exc:
                if not failing:
                    on_error(exc)
                failing = True

    thread = threading.Thread(target=loop, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def stale_trials(study: Any) -> list[Any]:
    """RUNNING trials whose worker has sent no heartbeat for the grace period (dead, or cut off)."""
    if not heartbeats_on(study):
        return []
    storage = study._storage
    return [storage.get_trial(trial_id) for trial_id in storage._get_stale_trial_ids(study._study_id)]


def best_trials(study: Any) -> list[Any]:
    """The best trial of a single-objective study, or the Pareto front of a multi-objective one."""
    from optuna.trial import TrialState

    if not search_trials(study, (TrialState.COMPLETE,)):
        return []
    try:
        best = study.best_trials if len(study.directions) > 1 else [study.best_trial]
    except ValueError:  # constrained study with no feasible trial
        return []
    # a seed replicate is its search trial's configuration again: name the search trial
    numbers = dict.fromkeys(t.user_attrs.get(REPLICATE_ATTR, t.number) for t in best)
    return [study.trials[n] for n in numbers]


# ---------------------------------------------------------------- seed replicates


REPLICATE_ATTR = "replicate_of"  # on a replicate trial: the number of the search trial it re-trains
SEED_ATTR = "seed"  # on a replicate trial: its training seed (search trials train with the spec's seed)


def is_replicate(trial: Any) -> bool:
    return REPLICATE_ATTR in trial.user_attrs


def search_trials(study: Any, states: tuple[Any, ...]) -> list[Any]:
    """The study's trials in these states that the search drew (its replicates left out)."""
    return [t for t in study.get_trials(deepcopy=False, states=states) if not is_replicate(t)]


def search_counts(study: Any) -> tuple[int, int]:
    """Finished and running search trials, from one read: a trial other workers tell meanwhile (they need no
    lock for that) would be counted in neither by two reads, and a claim would overshoot."""
    from optuna.trial import TrialState

    trials = search_trials(study, (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
    running = sum(t.state == TrialState.RUNNING for t in trials)
    return len(trials) - running, running


def finished_count(study: Any, searched: bool = False) -> int:
    """Finished trials; `searched`: those the search drew, seed replicates left out."""
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.PRUNED)
    return len(search_trials(study, states) if searched else study.get_trials(deepcopy=False, states=states))


def running_count(study: Any) -> int:
    """Trials running right now, this worker's and others' (a multi-worker study must not overshoot)."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def replicate_seeds(spec: SweepSpec) -> list[int]:
    """The new seeds of each replicated configuration: spec seed + 1, + 2, ..."""
    reps = spec.search.replicates
    return [spec.seed + i for i in range(1, reps.seeds)] if reps else []


def wanted_replicates(study: Any, spec: SweepSpec) -> list[tuple[int, int]]:
    """(search trial number, seed) of every replicate the finished search calls for, best trial first.

    The best `top_k` complete search trials: feasible ones first, then by the first objective (a
    multi-objective study: its Pareto front first). Pure function of the finished search, so every
    worker, and a resumed sweep, wants the same replicates."""
    from optuna.trial import TrialState

    reps = spec.search.replicates
    if reps is None:
        return []
    best = ranked(search_trials(study, (TrialState.COMPLETE,)), spec)
    return [(t.number, seed) for t in best[: reps.top_k] for seed in replicate_seeds(spec)]


def ranked(complete: list[Any], spec: SweepSpec) -> list[Any]:
    """Complete trials best first: feasible ones first, then by the first objective (a multi-objective study: its
    Pareto front first)."""
    return sorted(complete, key=_ranking(complete, spec))


def _ranking(complete: list[Any], spec: SweepSpec) -> Callable[[Any], tuple]:
    sign = -1.0 if spec.search.objectives[0].direction == "maximize" else 1.0
    front = {t.number for t in _front(complete, [o.direction for o in spec.search.objectives])}
    return lambda t: (_infeasible(t), t.number not in front, sign * t.values[0], t.number)


def _infeasible(t: Any) -> bool:
    return any(v > 0 for v in t.constraints.values())


def kept_models(finished: list[Any], spec: SweepSpec) -> set[int]:
    """The trial folders whose models search.keep_models: N keeps: the best N configurations (at least
    replicates.top_k) and those tied with the last of them, every replicated configuration's trials, and in a
    multi-objective study the Pareto fronts of the complete and of the feasible search trials. A superset of
    whatever the report can recommend, which only loses trials as trials are added."""
    from optuna.trial import TrialState

    complete = [t for t in finished if t.state == TrialState.COMPLETE]
    searched = [t for t in complete if not is_replicate(t)]
    count = max(spec.search.keep_models or 0, spec.search.replicates.top_k if spec.search.replicates else 0)
    rank = _ranking(searched, spec)
    order = sorted(searched, key=rank)
    keep: set[int] = set()
    if order:  # the last kept one's rank, ties included: the report breaks ties its own way
        last = rank(order[min(count, len(order)) - 1])[:3]
        keep = {t.number for t in order if rank(t)[:3] <= last}
    keep |= {t.user_attrs[REPLICATE_ATTR] for t in complete if is_replicate(t)}
    directions = [o.direction for o in spec.search.objectives]
    if len(directions) > 1:
        keep |= {t.number for t in _front(searched, directions)}
        keep |= {t.number for t in _front([t for t in searched if not _infeasible(t)], directions)}
    kept = [t for t in complete if t.user_attrs.get(REPLICATE_ATTR, t.number) in keep]
    return {t.user_attrs.get(RECORDED_FROM_ATTR, t.number) for t in kept}  # a late result ran in its first folder


def _front(trials: list[Any], directions: list[str]) -> list[Any]:
    if len(directions) == 1:
        return trials
    signs = [1.0 if d == "maximize" else -1.0 for d in directions]
    points = {t.number: [s * v for s, v in zip(signs, t.values, strict=True)] for t in trials}

    def dominated(p: list[float]) -> bool:
        return any(all(x >= y for x, y in zip(q, p, strict=True)) and q != p for q in points.values())

    return [t for t in trials if not dominated(points[t.number])]


def missing_replicates(study: Any, spec: SweepSpec) -> list[tuple[int, int]]:
    """Wanted replicates no trial holds or runs yet (a failed one is wanted again)."""
    from optuna.trial import TrialState

    live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    taken = {
        (t.user_attrs[REPLICATE_ATTR], t.user_attrs.get(SEED_ATTR))
        for t in study.get_trials(deepcopy=False, states=live)
        if is_replicate(t)
    }
    return [w for w in wanted_replicates(study, spec) if w not in taken]


def ask_replicate(study: Any, origin: int, seed: int) -> tuple[Any, int]:
    """A new trial with the params of search trial `origin`, and the seed to train it with (call under the lock).

    A replicate enqueued by a worker that died before asking for it is taken first (ask() pops the oldest
    waiting trial): the seed returned is the one the trial holds."""
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        params = study.get_trials(deepcopy=False)[origin].params  # trial numbers index a study's trials
        study.enqueue_trial(dict(params), user_attrs={REPLICATE_ATTR: origin, SEED_ATTR: seed})
    trial = study.ask()
    return trial, trial.user_attrs.get(SEED_ATTR, seed)
