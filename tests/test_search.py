"""The Optuna side of a sweep: samplers that continue their sequence on resume, heartbeats, the lock."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import optuna
import pytest
from support import base_spec

from harness import search, stores
from harness.spec import SweepSpec

SAMPLERS = ["random", "tpe", "nsga2", "cmaes", "gp", "grid"]


def spec_for(sampler: str, trials: int = 6) -> SweepSpec:
    spec = base_spec()
    spec["search"] |= {"sampler": sampler, "trials": trials}
    if sampler == "grid":
        space = {"beta": {"choice": [0.1, 0.2, 0.3]}, "loss_type": {"choice": ["sigmoid", "ipo"]}}
    else:
        space = {"beta": {"float": [0.01, 1.0], "log": True}, "learning_rate": {"float": [1e-5, 1e-3], "log": True}}
    spec["search"]["space"] = space
    return SweepSpec.model_validate(spec)


def run_trials(spec: SweepSpec, storage: str, n: int) -> None:
    """`n` ask/tell trials, as one sweep process runs them (a new process opens the study anew)."""
    study = search.open_study(spec, storage)
    for _ in range(n):
        trial = study.ask()
        params = search.suggest(trial, spec)
        study.tell(trial, float(params.get("beta", 0.0)))


def params_of(storage: str) -> list[dict]:
    return [t.params for t in optuna.load_study(study_name="test", storage=storage).trials]


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_a_resumed_sweep_continues_the_sequence(sampler: str, tmp_path: Path) -> None:
    """Three processes of 2 trials each draw exactly what one process of 6 draws: no point repeats."""
    spec = spec_for(sampler)
    whole, parts = f"sqlite:///{tmp_path / 'whole.db'}", f"sqlite:///{tmp_path / 'parts.db'}"
    run_trials(spec, whole, 6)
    for _ in range(3):
        run_trials(spec, parts, 2)
    assert params_of(parts) == params_of(whole)
    points = [tuple(sorted(p.items())) for p in params_of(parts)]
    assert len(set(points)) == len(points)


def test_a_changed_spec_is_refused_once_a_trial_ran_and_taken_before(tmp_path: Path) -> None:
    """A study that ran no trial (stopped by the base model or the data audit) takes the fixed spec, directions
    included; one with a trial refuses any change but the trial count."""
    from harness.spec import SpecError

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = spec_for("random")
    search.open_study(first, storage)
    changed = first.model_copy(update={"train": first.train | {"max_length": 1024}})
    objectives = [first.search.objectives[0].model_copy(update={"direction": "minimize"})]
    minimize = first.model_copy(update={"search": first.search.model_copy(update={"objectives": objectives})})
    assert search.open_study(changed, storage).user_attrs[search.SPEC_HASH_ATTR] == changed.spec_hash()
    study = search.open_study(minimize, storage)
    assert [d.name for d in study.directions] == ["MINIMIZE"]
    run_trials(minimize, storage, 1)
    with pytest.raises(SpecError, match="was run from a different spec"):
        search.open_study(changed.model_copy(update={"search": minimize.search}), storage)
    assert len(search.open_study(minimize.with_trials(9), storage).trials) == 1


def test_the_sequence_depends_on_the_seed(tmp_path: Path) -> None:
    spec = spec_for("random")
    run_trials(spec, f"sqlite:///{tmp_path / 'a.db'}", 2)
    run_trials(spec.model_copy(update={"seed": 1}), f"sqlite:///{tmp_path / 'b.db'}", 2)
    assert params_of(f"sqlite:///{tmp_path / 'a.db'}") != params_of(f"sqlite:///{tmp_path / 'b.db'}")


def test_a_repeated_point_is_found(tmp_path: Path) -> None:
    spec = spec_for("random")
    spec = spec.model_copy(update={"search": spec.search.model_copy(update={"space": {"beta": search_dim([0.1])}})})
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    run_trials(spec, storage, 1)
    study = search.open_study(spec, storage)
    trial = study.ask()
    search.suggest(trial, spec)
    assert search.duplicate_of(study, trial) == 0


def search_dim(choices: list) -> object:
    from harness.spec import Dimension

    return Dimension.model_validate({"choice": choices})


# ---------------------------------------------------------------- heartbeats


@pytest.fixture
def fast_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stores, "HEARTBEAT_S", 1)
    monkeypatch.setattr(search, "HEARTBEAT_S", 1)
    # SQLite's clock has 1 s steps, and a loaded CI machine may hold a beat back a second or two: keep clear
    monkeypatch.setattr(stores, "GRACE_S", 4)


def test_heartbeats_are_recorded_on_sqlite_and_a_silent_trial_goes_stale(fast_heartbeats, tmp_path: Path) -> None:
    spec = spec_for("random")
    study = search.open_study(spec, f"sqlite:///{tmp_path / 'o.db'}")
    assert search.heartbeats_on(study), "the _CachedStorage wrapper must not hide the RDB storage's heartbeats"
    beating, silent = study.ask(), study.ask()
    search.beat(study, silent)
    errors: list[Exception] = []
    with search.heartbeat(study, beating, on_error=errors.append):
        time.sleep(6.5)  # past the grace: only the trial without beats is stale
        stale = [t.number for t in search.stale_trials(study)]
    assert stale == [silent.number] and errors == []


def test_a_failed_heartbeat_is_reported_and_retried(fast_heartbeats, tmp_path: Path, monkeypatch) -> None:
    study = search.open_study(spec_for("random"), f"sqlite:///{tmp_path / 'o.db'}")
    trial = study.ask()
    real = study._storage.record_heartbeat
    calls: list[int] = []

    def flaky(trial_id: int) -> None:
        calls.append(trial_id)
        if len(calls) <= 2:
            raise RuntimeError("database is locked")
        real(trial_id)

    monkeypatch.setattr(study._storage, "record_heartbeat", flaky)
    errors: list[Exception] = []
    with search.heartbeat(study, trial, on_error=errors.append):
        while len(calls) < 4:
            time.sleep(0.2)
    assert [str(e) for e in errors] == ["database is locked"], "one report per streak of failures"
    assert search.stale_trials(study) == []


# ---------------------------------------------------------------- storage URLs and the lock


def test_passwords_are_hidden() -> None:
    assert (
        stores.redact("postgresql://ann:s3cret@db.example:5432/optuna") == "postgresql://ann:***@db.example:5432/optuna"
    )
    assert stores.redact("postgresql://ann@db/optuna") == "postgresql://ann@db/optuna"
    assert stores.redact("sqlite:///optuna.db") == "sqlite:///optuna.db"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite:///missing-dir/optuna.db", "folder missing-dir does not exist"),
        ("sqlite://optuna.db", "sqlite:///"),
        ("postgress://u:pw@h/db", "unknown scheme 'postgress'"),
        ("missing-dir/journal.log", "folder missing-dir does not exist"),
    ],
)
def test_bad_storage_urls_are_refused(url: str, message: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(stores.StoreError, match=message) as caught:
        stores.check_storage(url)
    assert "pw" not in str(caught.value)


@pytest.mark.parametrize("name", ["../x", "a b", "x' or '1'='1", ""])
def test_names_used_in_paths_and_filters_are_checked(name: str) -> None:
    with pytest.raises(stores.StoreError, match="invalid study name"):
        stores.check_name(name)


def lock_is_exclusive(url: str) -> None:
    """While one holder has the lock, a second waits; it gets it once the first lets go."""
    first, second = stores.StudyLock(url, "test"), stores.StudyLock(url, "test")
    order: list[str] = []
    held = threading.Event()

    def contender() -> None:
        held.wait()
        with second.held():
            order.append("second")

    thread = threading.Thread(target=contender)
    thread.start()
    with first.held():
        held.set()
        time.sleep(0.5)  # the contender is blocked meanwhile
        order.append("first")
    thread.join(timeout=30)
    assert order == ["first", "second"]


def test_the_study_lock_on_sqlite(tmp_path: Path) -> None:
    lock_is_exclusive(f"sqlite:///{tmp_path / 'optuna.db'}")


def test_the_study_lock_on_postgresql(postgres_url: str) -> None:
    lock_is_exclusive(postgres_url)


def test_replicates_retrain_the_best_configurations_with_new_seeds(tmp_path: Path) -> None:
    spec = base_spec()
    spec["search"] |= {"trials": 4, "replicates": {"top_k": 2, "seeds": 3}}
    spec = SweepSpec.model_validate(spec)
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    run_trials(spec, storage, 4)  # objective value = beta
    study = search.open_study(spec, storage)
    best = sorted(study.trials, key=lambda t: -t.values[0])[:2]
    wanted = search.wanted_replicates(study, spec)
    assert wanted == [(best[0].number, 1), (best[0].number, 2), (best[1].number, 1), (best[1].number, 2)]
    trial, seed = search.ask_replicate(study, *wanted[0])
    assert seed == 1
    assert search.suggest(trial, spec) == best[0].params  # the same configuration, a new seed
    study.tell(trial, 0.0)  # a replicate scoring low does not change which configurations are wanted
    assert search.missing_replicates(study, spec) == wanted[1:]
    assert search.wanted_replicates(study, spec) == wanted
    # adding replicates to a finished study resumes it: the key is not part of the spec's identity
    assert (
        spec.spec_hash()
        == spec.model_copy(update={"search": spec.search.model_copy(update={"replicates": None})}).spec_hash()
    )
    kept = spec.model_copy(update={"search": spec.search.model_copy(update={"keep_models": 2})})
    assert kept.spec_hash() == spec.spec_hash(), "what stays on disk is not part of the study's identity"


def test_replicates_of_a_multi_objective_study_come_from_its_pareto_front(tmp_path: Path) -> None:
    spec = base_spec()
    spec["search"] |= {
        "sampler": "nsga2",
        "objectives": [
            {"metric": "identity.hit_rate", "direction": "maximize"},
            {"metric": "overfit.kl_ref", "direction": "minimize"},
        ],
        "replicates": {"top_k": 2, "seeds": 2},
    }
    spec = SweepSpec.model_validate(spec)
    study = search.open_study(spec, f"sqlite:///{tmp_path / 'o.db'}")
    for values in ([0.5, 0.6], [0.9, 0.5], [0.8, 0.1]):  # trial 0 is dominated by trial 2
        trial = study.ask()
        search.suggest(trial, spec)
        study.tell(trial, values)
    assert search.wanted_replicates(study, spec) == [(1, 1), (2, 1)]
