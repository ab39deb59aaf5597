"""The search: the spec's space, sampler, pruner and objectives as an Optuna study."""

from __future__ import annotations

import warnings
from typing import Any

from harness import metrics
from harness.spec import SpecError, SweepSpec

DEFAULT_STORAGE = "sqlite:///optuna.db"  # one file holds every study of a project
SPEC_HASH_ATTR = "harness.spec_hash"


def open_study(spec: SweepSpec, storage_url: str) -> Any:
    """Create the study, or load it to resume; refuse to mix trials of a different spec."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = _storage(storage_url)
    directions = [o.direction for o in spec.search.objectives]
    study = optuna.create_study(
        storage=storage,
        study_name=spec.study,
        sampler=sampler(spec),
        pruner=pruner(spec),
        directions=directions,
        load_if_exists=True,
    )
    found = [d.name.lower() for d in study.directions]
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
            f"study '{spec.study}' in {storage_url} was run from a different spec (hash {known}, now "
            f"{spec.spec_hash()}); only search.trials may change on resume. Use a new study name."
        )
        raise SpecError(spec.study, [("study", None, message)])
    return study


def _storage(url: str) -> Any:
    import optuna

    from harness.tracking import retry_schema_race

    if url.startswith("sqlite"):
        return retry_schema_race(
            lambda: optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
        )
    if "://" in url:  # PostgreSQL or MySQL: several workers; heartbeats let crashed workers' trials be reclaimed
        # The harness drives trials with ask/tell and records heartbeats itself (see harness.sweep).
        warnings.filterwarnings("ignore", message=".*heartbeat.*", category=UserWarning)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        return retry_schema_race(lambda: optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=120))
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(url))


def startup_trials(spec: SweepSpec) -> int:
    """Random trials before a model-based sampler takes over: half the budget, at most Optuna's 10."""
    return max(2, min(10, spec.search.trials // 2))


def sampler(spec: SweepSpec) -> Any:
    import optuna.samplers as s

    seed, kind = spec.seed, spec.search.sampler
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


def constrain(trial: Any, spec: SweepSpec, scores: dict[str, float]) -> None:
    """Record each constraint's violation on the trial (<= 0: satisfied); Optuna's samplers and
    best_trial(s) then prefer feasible trials."""
    for text in spec.search.constraints:
        trial.set_constraint(text, metrics.constraint_violation(text, scores))


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


def uses_heartbeat(study: Any) -> bool:
    storage = study._storage
    return bool(getattr(storage, "heartbeat_interval", None) or getattr(storage, "_heartbeat_interval", None))


def best_trials(study: Any) -> list[Any]:
    """The best trial of a single-objective study, or the Pareto front of a multi-objective one."""
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return []
    try:
        return study.best_trials if len(study.directions) > 1 else [study.best_trial]
    except ValueError:  # constrained study with no feasible trial
        return []
