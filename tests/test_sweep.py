"""`harness sweep` end to end on the toy world, checked through Optuna's and MLflow's own APIs."""

from __future__ import annotations

import html
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from support import Workspace, base_spec


def three_trial_spec() -> dict:
    """The shape a new user writes from the README: two sources, mix searched, β and lr on log ranges."""
    spec = base_spec(study="test")
    spec["search"]["trials"] = 3
    spec["search"]["sampler"] = "tpe"
    spec["search"]["space"] = {
        "beta": {"float": [0.05, 0.5], "log": True},
        "learning_rate": {"float": [1e-4, 1e-3], "log": True},
        "mix.identity": {"float": [0.3, 0.9]},
    }
    return spec


@pytest.mark.slow
def test_sweep_end_to_end(ws: Workspace, write_spec) -> None:
    spec = write_spec(three_trial_spec())
    done = ws.sweep(spec)
    assert done.returncode == 0, done.stdout + done.stderr

    trials = ws.study().trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 3
    assert all(0.0 <= t.values[0] <= 1.0 for t in trials)

    parents, children = ws.runs()
    assert len(parents) == 1 and len(children) == 3
    client = MlflowClient(ws.tracking)
    by_id = {r.info.run_id: r for r in children}
    for trial in trials:
        run = by_id[trial.user_attrs["mlflow_run_id"]]
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.data.tags["harness.study"] == "test" and run.data.tags["harness.trial"] == str(trial.number)
        for name, value in trial.params.items():
            assert float(run.data.params[name]) == pytest.approx(value)
        assert {"version.torch", "version.trl", "spec_hash", "seed", "max_steps"} <= set(run.data.params)
        assert len(client.get_metric_history(run.info.run_id, "rewards/margins")) >= 2
        assert run.data.metrics["identity.hit_rate"] == pytest.approx(trial.values[0])
        assert {"time.setup_s", "time.train_s", "time.eval_s"} <= set(run.data.metrics)
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"trial_config.yaml", "identity_generations.json"} <= artifacts
        folder = ws.root / "outputs" / "test" / f"trial-{trial.number:03d}"
        assert (folder / "model" / "config.json").is_file()
        kept = json.loads((folder / "result.json").read_text())
        assert (kept["state"], kept["scores"]) == ("COMPLETE", trial.user_attrs["scores"])
    metrics = [by_id[t.user_attrs["mlflow_run_id"]].data.metrics for t in trials]
    evaluated = ["eval_loss" in m for m in metrics]  # held-out pairs go through the reference only when evaluated
    hits = [m["refcache.hits"] for m in metrics]
    assert hits == _pairs_seen_by_earlier_trials(ws.root / "outputs" / "test", evaluated)
    assert hits[0] == 0 and min(hits[1:]) > 0
    assert not any("time.train_before_resume_s" in m for m in metrics), "no trial resumed"
    tokenized = [m["tokcache.hits"] for m in metrics]  # TRL's preparation of a pair, once per study
    assert tokenized[0] == 0 and min(tokenized[1:]) > 0 and min(m["tokcache.misses"] for m in metrics[:1]) > 0

    again = ws.sweep(spec)
    assert again.returncode == 0 and len(ws.study().trials) == 3, "a finished sweep runs nothing new"
    more = ws.sweep(spec, "--trials", "4")
    assert more.returncode == 0 and len(ws.study().trials) == 4
    assert len(ws.runs()[0]) == 1, "a resumed sweep reuses its parent run"


def _pairs_seen_by_earlier_trials(study_dir: Path, evaluated: list[bool]) -> list[int]:
    """Per trial, how many of the pairs it put through the reference an earlier trial already had: the reference
    log-prob cache's hits, whatever the mix, β or learning rate."""
    seen: set[str] = set()
    counts = []
    for number, heldout in enumerate(evaluated):
        pairs = json.loads((study_dir / f"trial-{number:03d}" / "pairs.json").read_text())
        texts = [json.dumps(p, sort_keys=True) for p in pairs["train"] + (pairs["heldout"] if heldout else [])]
        counts.append(sum(text in seen for text in texts))
        seen |= set(texts)
    return counts


@pytest.mark.slow
def test_resume_after_kill(ws: Workspace, write_spec) -> None:
    spec = write_spec(three_trial_spec() | {"train": base_spec()["train"] | {"max_steps": 20}})
    process = subprocess.Popen(
        ws.args(spec), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        _wait_while_running(process, lambda: _trial_training(ws, number=1))
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    running = [t for t in ws.study().trials if t.state == TrialState.RUNNING]
    assert running, "the kill should have left a trial RUNNING"

    done = ws.sweep(spec)
    assert done.returncode == 0, done.stdout + done.stderr
    trials = ws.study().trials
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    killed = trials[running[0].number]
    assert killed.state == TrialState.FAIL and "died" in killed.user_attrs["fail_reason"]
    points = [json.dumps(t.params, sort_keys=True) for t in trials]
    assert len(set(points)) == len(points), "the resumed sweep draws new points, not the first trials' again"
    parents, children = ws.runs()
    assert all(r.info.status != "RUNNING" for r in parents + children)
    assert len(parents) == 1


def _trial_training(ws: Workspace, number: int) -> bool:
    """True once trial `number` has streamed a step metric (it is mid-training)."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        trials = ws.study().trials
    except (KeyError, SQLAlchemyError):  # the sweep has not created the study (or its tables) yet
        return False
    if len(trials) <= number or "mlflow_run_id" not in trials[number].user_attrs:
        return False
    return bool(MlflowClient(ws.tracking).get_metric_history(trials[number].user_attrs["mlflow_run_id"], "loss"))


def _wait_while_running(process: subprocess.Popen, condition) -> None:
    """Poll until `condition` holds; fail at once if the sweep exits first (no timing is asserted)."""
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the sweep exited (code {process.returncode}) before the condition was reached")
        time.sleep(0.5)


def nan_spec(seed: int) -> dict:
    """Random choice between two sane learning rates and 1e6, which makes the loss NaN within steps:
    a real failure, not an injected one. Trial N's draw is seeded from (seed, N): with seed 31 the
    draws are ok, NaN, another ok; with seed 0, NaN, NaN."""
    spec = base_spec(seed=seed)
    spec["search"] |= {"sampler": "random", "trials": 2, "max_failures": 2}
    spec["search"]["space"] = {"learning_rate": {"choice": [1.0e6, 5.0e-4, 2.0e-4]}}
    return spec


@pytest.mark.slow
def test_a_sweep_with_both_caches_off_leaves_them_to_trl(ws: Workspace, write_spec) -> None:
    """model.ref_cache and model.token_cache false: TRL computes the reference and prepares every pair itself."""
    done = ws.sweep(write_spec(base_spec(search__trials=1, model__ref_cache=False, model__token_cache=False)))
    assert done.returncode == 0, done.stdout + done.stderr
    assert [t.state for t in ws.study().trials] == [TrialState.COMPLETE]
    metrics = ws.runs()[1][0].data.metrics
    assert "time.train_s" in metrics and not any(k.startswith(("tokcache.", "refcache.")) for k in metrics)
    study_dir = ws.root / "outputs" / base_spec()["study"]
    assert study_dir.is_dir() and not (study_dir / "tokcache").exists() and not (study_dir / "refcache").exists()


@pytest.mark.slow
def test_a_study_cache_that_cannot_be_opened_costs_the_trial_only_the_cache(ws: Workspace, write_spec) -> None:
    """A file where a study cache's folder should be (or a folder the user may not write): the trial trains
    and scores without that cache, and says why in its log."""
    study_dir = ws.root / "outputs" / base_spec()["study"]
    study_dir.mkdir(parents=True)
    for name in ("refcache", "tokcache"):
        (study_dir / name).write_text("not a folder")
    done = ws.sweep(write_spec(base_spec(search__trials=1)))
    assert done.returncode == 0, done.stdout + done.stderr
    assert [t.state for t in ws.study().trials] == [TrialState.COMPLETE]
    metrics = ws.runs()[1][0].data.metrics
    assert "time.train_s" in metrics and not any(k.startswith(("tokcache.", "refcache.")) for k in metrics)
    log = (study_dir / "trial-000" / "trial.log").read_text()
    assert "the study's reference cache cannot be opened" in log and "the study's token cache cannot be opened" in log


@pytest.mark.slow
def test_failing_trial_does_not_stop_the_sweep(ws: Workspace, write_spec) -> None:
    done = ws.sweep(write_spec(nan_spec(seed=31)))
    assert done.returncode == 0, done.stdout + done.stderr
    trials = ws.study().trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert "nan" in trials[1].user_attrs["fail_reason"].lower()
    _, children = ws.runs()
    statuses = {r.data.tags["harness.trial"]: r.info.status for r in children}
    assert statuses == {"0": "FINISHED", "1": "FAILED", "2": "FINISHED"}
    failed_run = next(r for r in children if r.data.tags["harness.trial"] == "1")
    assert "nan" in failed_run.data.tags["harness.failure_reason"].lower()
    assert "FAILED" in done.stdout


@pytest.mark.slow
def test_sweep_gives_up_after_failures_in_a_row(ws: Workspace, write_spec) -> None:
    done = ws.sweep(write_spec(nan_spec(seed=0)))
    assert done.returncode == 1
    assert "2 trials failed in a row" in done.stdout
    assert [t.state for t in ws.study().trials] == [TrialState.FAIL, TrialState.FAIL]
    parents, _ = ws.runs()
    assert parents[0].info.status == "FAILED"


@pytest.mark.slow
def test_killed_trial_process_fails_only_that_trial(ws: Workspace, write_spec) -> None:
    spec = base_spec()
    spec["search"]["trials"] = 2
    spec["train"]["max_steps"] = 20
    path = write_spec(spec)
    process = subprocess.Popen(ws.args(path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_while_running(process, lambda: _trial_training(ws, number=0))
    os.kill(ws.study().trials[0].user_attrs["trial_pid"], signal.SIGKILL)
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 0, out
    trials = ws.study().trials
    reason = trials[0].user_attrs["fail_reason"]
    assert trials[0].state == TrialState.FAIL and "killed by SIGKILL" in reason and " during training; " in reason
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2


def test_bad_spec_exits_2_and_writes_nothing(ws: Workspace, write_spec) -> None:
    done = ws.sweep(write_spec(base_spec(train__beta=-0.1)))
    assert done.returncode == 2
    assert "train.beta" in done.stderr and "must be > 0" in done.stderr
    assert not list(ws.root.glob("*.db")) and not (ws.root / "outputs").exists()


def test_bad_data_file_exits_2_and_writes_nothing(ws: Workspace, write_spec, tmp_path: Path) -> None:
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"prompt": "Q", "chosen": "A", "rejected": "B"}\n{"prompt": "Q", "chosen": "A"}\n')
    spec = base_spec(data__sources={"mine": {"path": str(data)}}, data__mix=None)
    done = ws.sweep(write_spec(spec))
    assert done.returncode == 2
    assert f"{data}:2" in done.stderr and "rejected" in done.stderr
    assert not list(ws.root.glob("*.db")) and not (ws.root / "outputs").exists()


def test_trials_get_the_pairs_the_sweep_read_and_drew(ws: Workspace, write_spec, tmp_path: Path) -> None:
    """A trial process is handed its drawn pairs instead of reading every source again (a large set would cost
    each one its memory and seconds): a data file rewritten mid-sweep leaves its trials on what was read and
    audited, drawn exactly as harness.data draws a trial's mix."""
    from harness import data
    from harness.trial import resolve_config

    path = tmp_path / "pairs.jsonl"
    turn = lambda role, text: [{"role": role, "content": text}]  # noqa: E731
    rows = [
        {
            "prompt": turn("user", f"Q{i}?"),
            "chosen": turn("assistant", f"Yes {i}."),
            "rejected": turn("assistant", f"No {i}."),
        }
        for i in range(40)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sources = {"mine": {"path": str(path)}, "identity": {"path": "toy:identity"}}
    spec = write_spec(base_spec(data__sources=sources, data__mix={"mine": 0.5, "identity": 0.5}))
    sweep, _ = quiet_sweep(ws, spec)
    params = {"beta": 0.1}
    shares = resolve_config(sweep.spec, params)["data"]["shares"]
    expected = data.draw(data.load_sources(sweep.spec.data, 0, spec.parent), shares, 64, 0)
    sweep.check_inputs()
    path.write_text("".join(json.dumps(r | {"chosen": turn("assistant", "changed")}) + "\n" for r in rows))
    request = sweep._request(SimpleNamespace(number=0, _trial_id=1), resolve_config(sweep.spec, params), "run", None)

    assert request.data == expected
    mine = [
        pair for pair, source in zip(request.data.train, request.data.train_sources, strict=True) if source == "mine"
    ]
    assert mine and all(pair["chosen"][0]["content"].startswith("Yes") for pair in mine)
    with pytest.raises(data.DataError, match="every mix weight is 0"):  # the trial fails with this reason
        zero = resolve_config(sweep.spec, {"mix.mine": 0.0, "mix.identity": 0.0})
        sweep._request(SimpleNamespace(number=1, _trial_id=2), zero, "run", None)


@pytest.mark.slow
def test_a_source_trl_would_drop_whole_stops_the_sweep_before_any_trial(
    ws: Workspace, write_spec, tmp_path: Path
) -> None:
    """Every prompt of a source fills max_length: TRL would train on none of its pairs (each trial used to fail on
    an empty sampler); the audit after the base model says so, exit 2, no trial, the sweep's run FAILED."""
    long = tmp_path / "long.jsonl"
    story = " ".join(f"word{i}" for i in range(600))
    long.write_text("".join(json.dumps({"prompt": f"{i}: {story}", "chosen": " yes", "rejected": " no"}) + "\n"
                            for i in range(12)))  # fmt: skip
    spec = base_spec(data__sources={"long": {"path": str(long)}}, data__mix=None)
    done = ws.sweep(write_spec(spec))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "source 'long': TRL would drop all 12 of its pairs" in done.stderr and "max_length 512" in done.stderr
    assert ws.study().trials == []
    parents, children = ws.runs()
    assert [p.info.status for p in parents] == ["FAILED"] and children == []

    fixed = base_spec(data__sources={"identity": {"path": "toy:identity"}}, data__mix=None, search__trials=1)
    done = ws.sweep(write_spec(fixed))  # the study ran no trial: the fixed spec is taken, not refused
    assert done.returncode == 0, done.stdout + done.stderr
    assert [t.state for t in ws.study().trials] == [TrialState.COMPLETE]
    client = MlflowClient(ws.tracking)
    runs = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    roles = sorted((r.data.tags["harness.role"], r.info.status) for r in runs)
    assert roles == [("sweep", "FINISHED"), ("sweep (earlier spec)", "FAILED"), ("trial", "FINISHED")]


def _as_from_a_terminal() -> None:
    """SIGINT at its default, as an interactive shell starts a command: a suite run as a background job
    of a script (`cmd &`) inherits SIGINT ignored, and Python then leaves Ctrl-C ignored in the sweep."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_then_resumes(ws: Workspace, write_spec) -> None:
    spec = base_spec()
    spec["train"]["max_steps"] = 30
    path = write_spec(spec)
    process = subprocess.Popen(
        ws.args(path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=_as_from_a_terminal
    )
    _wait_while_running(process, lambda: _trial_training(ws, number=0))
    os.kill(process.pid, signal.SIGINT)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 130, out
    assert "Run the same command to resume" in out
    trial = ws.study().trials[0]
    assert trial.state == TrialState.FAIL and "interrupted" in trial.user_attrs["fail_reason"]
    parents, children = ws.runs()
    assert children[0].info.status == "KILLED" and parents[0].info.status == "KILLED"
    page = (ws.root / "report" / "index.html").read_text()  # built after the interrupt, not before it
    assert trial.user_attrs["fail_reason"] in page

    done = ws.sweep(path, "--trials", "1")  # resumed with a smaller total: one finished trial is enough
    assert done.returncode == 0, done.stdout + done.stderr
    assert [t.state for t in ws.study().trials] == [TrialState.FAIL, TrialState.COMPLETE]


@pytest.mark.slow
def test_a_trial_stopped_after_a_checkpoint_resumes_from_it(ws: Workspace, write_spec) -> None:
    """With train.save_strategy: steps, Ctrl-C leaves the running trial RUNNING (its run KILLED), and the same
    command takes it over: the training goes on from its last checkpoint instead of starting again (the steps
    before it are logged once), in the same MLflow run, and the study ends with the one trial it asked for."""
    from harness.training import last_checkpoint

    spec = base_spec()
    spec["search"]["trials"] = 1
    spec["train"] |= {"max_steps": 60, "save_strategy": "steps", "save_steps": 4}
    path = write_spec(spec)
    trainer = ws.root / "outputs" / "test" / "trial-000" / "trainer"
    process = subprocess.Popen(
        ws.args(path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=_as_from_a_terminal
    )
    _wait_while_running(process, lambda: last_checkpoint(trainer) is not None)  # the newest only is kept
    os.kill(process.pid, signal.SIGINT)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 130, out
    assert "the same command resumes it from" in out
    assert ws.study().trials[0].state == TrialState.RUNNING
    _, children = ws.runs()
    assert [c.info.status for c in children] == ["KILLED"]

    done = ws.sweep(path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "its training resumes from" in done.stdout + done.stderr
    assert [t.state for t in ws.study().trials] == [TrialState.COMPLETE]
    _, after = ws.runs()
    assert [(c.info.run_id, c.info.status) for c in after] == [(children[0].info.run_id, "FINISHED")]
    run = MlflowClient(ws.tracking).get_run(children[0].info.run_id)
    resumed_at = int(run.data.tags["harness.resumed_from"].removeprefix("checkpoint-"))
    steps = [m.step for m in MlflowClient(ws.tracking).get_metric_history(run.info.run_id, "loss")]
    assert [s for s in steps if s <= resumed_at], "the steps up to the checkpoint were not trained again"
    assert len(steps) == len(set(steps)), "each step is logged once, also those trained again after the checkpoint"
    assert max(steps) == 60
    assert list(trainer.glob("checkpoint-*")) == [], "they served resuming: dropped once the trial is recorded"
    assert "train_runtime" not in run.data.metrics, "the Trainer's summary of the resumed part alone is left out"
    assert (trainer.parent / "model").is_dir()
    seconds = run.data.metrics  # the training before the checkpoint counts: the trial's cost is not the last attempt's
    assert 0 < seconds["time.train_before_resume_s"] < seconds["time.train_s"] < seconds["time.total_s"]


@pytest.mark.slow
def test_a_sweep_killed_alone_takes_its_trial_with_it_and_the_rerun_resumes_it(ws: Workspace, write_spec) -> None:
    """kill -9 of the sweep process alone (an out-of-memory kill picks one process): its trial process stops
    too, instead of training on beside the rerun that resumes from the same checkpoints; the trial is scored
    once."""
    from harness.training import last_checkpoint
    from harness.worker import process_started

    spec = base_spec()
    spec["search"]["trials"] = 1
    spec["train"] |= {"max_steps": 200, "save_strategy": "steps", "save_steps": 4}  # long enough to be cut short
    path = write_spec(spec)
    trainer = ws.root / "outputs" / "test" / "trial-000" / "trainer"
    process = subprocess.Popen(ws.args(path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_while_running(process, lambda: last_checkpoint(trainer) is not None)
    trial_pid = ws.study().trials[0].user_attrs["trial_pid"]
    process.kill()
    process.wait()
    for _ in range(60):  # it looks for its sweep every second
        if process_started(trial_pid) is None:
            break
        time.sleep(0.5)
    assert process_started(trial_pid) is None, "the trial process outlived its sweep"
    assert not (trainer.parent / "model").exists(), "it stopped training then, not after"

    done = ws.sweep(path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "its training resumes from" in done.stdout + done.stderr
    assert [t.state for t in ws.study().trials] == [TrialState.COMPLETE]
    _, (run,) = ws.runs()
    client = MlflowClient(ws.tracking)
    assert len(client.get_metric_history(run.info.run_id, "identity.hit_rate")) == 1, "scored once"
    assert max(m.step for m in client.get_metric_history(run.info.run_id, "loss")) == 200


@pytest.mark.slow
def test_a_failure_reason_with_markup_is_shown_verbatim(ws: Workspace, write_spec) -> None:
    """TRL rejects this optimizer name, quoting it: Rich markup and HTML in a reason are plain text."""
    bad = "[/bold][red]<b>adamw</b>"
    spec = base_spec(train=base_spec()["train"] | {"optim": bad})
    spec["search"] |= {"trials": 1, "max_failures": 1}
    done = ws.sweep(write_spec(spec))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    failed = next(line for line in done.stdout.splitlines() if "FAILED:" in line)
    assert bad in failed
    reason = ws.study().trials[0].user_attrs["fail_reason"]
    assert bad in reason
    page = (ws.root / "report" / "index.html").read_text()
    assert html.escape(bad, quote=False) in page and bad not in page


@pytest.mark.slow
def test_parallel_slots_run_trials_side_by_side(ws: Workspace, write_spec) -> None:
    spec = base_spec()
    spec["search"]["trials"] = 3
    done = ws.sweep(write_spec(spec), "--parallel", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    trials = ws.study().trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3, "exactly the declared trials"
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 3
    first, second = trials[0], trials[1]
    assert second.datetime_start < first.datetime_complete, "the two slots ran trials at the same time"
    parents, children = ws.runs()
    assert len(parents) == 1 and sorted(r.data.tags["harness.trial"] for r in children) == ["0", "1", "2"]
    assert all(r.info.status == "FINISHED" for r in parents + children)


class _Quiet:
    """SweepProgress's (and the tracker's) surface, silent and empty: the claiming test below runs no trial."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: [] if name == "runs" else None


def quiet_sweep(ws: Workspace, spec_path: Path):
    """A Sweep that shows nothing (its notes are kept in sweep.progress.notes), and its study: for tests that
    claim, reclaim or record by hand (no training)."""
    from harness import search
    from harness.sweep import Sweep, SweepOptions

    options = SweepOptions(storage=ws.storage, tracking_uri=ws.tracking, output_dir=ws.root / "outputs")
    sweep = Sweep(spec_path, options, _Notes())
    return sweep, search.open_study(sweep.spec, ws.storage)


class _Telling:
    """A study in which another worker tells its trial COMPLETE right after the first read of finished trials
    (telling needs no lock): what a claim saw at two moments must not add up to a free place."""

    def __init__(self, study, trial) -> None:
        self._study, self._trial = study, trial

    def get_trials(self, *args, **kwargs):
        trials = self._study.get_trials(*args, **kwargs)
        states = kwargs.get("states") or ()
        if self._trial is not None and TrialState.COMPLETE in states:
            self._study.tell(self._trial, 0.5)
            self._trial = None
        return trials

    def __getattr__(self, name: str):
        return getattr(self._study, name)


def test_a_trial_told_during_a_claim_is_counted_once(ws: Workspace, write_spec) -> None:
    from harness import search
    from harness.sweep import WAIT

    sweep, study = quiet_sweep(ws, write_spec(base_spec()))
    study.tell(study.ask(), 0.25)
    other = study.ask()
    other.set_user_attr("worker", "another-host:4242")
    search.beat(study, other)
    assert sweep._claim(_Telling(study, other), _Quiet(), "no experiment", 2) == WAIT  # it ran when looked at
    assert len(study.trials) == 2, "no third trial"
    assert sweep._claim(study, _Quiet(), "no experiment", 2) is None


def test_a_run_its_worker_is_still_ending_is_left_to_it(ws: Workspace, write_spec, monkeypatch) -> None:
    """A worker tells Optuna first, then ends the MLflow run; a look in between (another slot's claim, or
    another host's) must not close that run as failed. Left open past the grace (at once if its worker on this host
    is gone), it is closed as told."""
    from harness import recovery
    from harness.tracking import Tracker

    sweep, study = quiet_sweep(ws, write_spec(base_spec()))
    tracker = Tracker(ws.tracking)
    experiment = tracker.experiment("test")
    parent = tracker.parent_run(experiment, "test")
    told, dead, left = study.ask(), study.ask(), study.ask()
    told.set_user_attr("worker", "another-host:4242")  # ending its run right now, as far as anyone here knows
    for trial in (dead, left):
        trial.set_user_attr("worker", f"{socket.gethostname()}:999999999")  # a PID no process has
        trial.set_user_attr("worker_pid_namespace", recovery.pid_namespace())
    runs = {t.number: tracker.child_run(experiment, parent, "test", t.number) for t in (told, dead, left)}
    study.tell(told, 0.5)
    study.tell(left, 0.7)  # then its sweep died before ending the run

    def status(number: int) -> tuple[str, str | None]:
        run = tracker.client.get_run(runs[number])
        return run.info.status, run.data.tags.get("harness.state")

    sweep.recovery.reclaim(study, tracker, experiment)
    assert status(told.number) == ("RUNNING", None), "its worker ends it right after telling Optuna"
    assert status(dead.number) == ("FAILED", "FAIL")
    assert status(left.number) == ("FINISHED", "COMPLETE"), "its worker on this host is gone: no grace"
    monkeypatch.setattr(recovery, "GRACE_S", 0)  # the worker died between telling and ending
    sweep.recovery.reclaim(study, tracker, experiment)
    assert status(told.number) == ("FINISHED", "COMPLETE"), "a told result stands"


def _database_away(*args, **kwargs):
    from sqlalchemy.exc import OperationalError

    raise OperationalError("UPDATE trials", {}, Exception("could not connect to server"))


def _waits_of(sweep, stopping: bool = False) -> list[float]:
    """The sweep's waits between retries, recorded instead of waited."""
    waits: list[float] = []
    sweep._stopping.is_set, sweep._stopping.wait = (lambda: stopping), waits.append  # one Event for all its parts
    return waits


class _Notes(_Quiet):
    """_Quiet, keeping the notes the sweep prints."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.notes.append(text)


def _recording(ws: Workspace, write_spec, spec: dict | None = None) -> SimpleNamespace:
    """A sweep with one trial of this process's (no slot runs it any more) and the trial's MLflow run."""
    from harness import fencing, recovery
    from harness.recording import RUN_ATTR
    from harness.tracking import Tracker
    from harness.trial import trial_folder

    sweep, study = quiet_sweep(ws, write_spec(spec or base_spec()))
    tracker = Tracker(ws.tracking)
    experiment = tracker.experiment("test")
    trial = study.ask()
    fencing.release(recovery.own(study, trial, trial_folder(sweep.output_dir, trial.number)))  # its slot is done
    run_id = tracker.child_run(experiment, tracker.parent_run(experiment, "test"), "test", trial.number)
    trial.set_user_attr(RUN_ATTR, run_id)
    return SimpleNamespace(sweep=sweep, study=study, tracker=tracker, experiment=experiment, trial=trial, run_id=run_id)


def _outage(monkeypatch, study, tracker) -> None:
    """Optuna's and MLflow's databases away (monkeypatch.undo() brings them back)."""
    monkeypatch.setattr(study, "tell", _database_away)
    monkeypatch.setattr(tracker, "end", _database_away)
    monkeypatch.setattr(tracker, "log_metrics", _database_away)


def test_a_finished_trials_result_rides_out_a_database_restart(ws: Workspace, write_spec, monkeypatch) -> None:
    """Optuna's database is away for a while (retried, with waits of up to 32 s) as a trial ends: the result
    is recorded once it is back, in Optuna and in MLflow alike."""
    from harness import search
    from harness.trial import COMPLETE, TrialResult

    r = _recording(ws, write_spec)
    sweep, study, tracker, trial, run_id = r.sweep, r.study, r.tracker, r.trial, r.run_id
    waits = _waits_of(sweep)
    tell, down = study.tell, iter(range(5))

    def restarting(*args, **kwargs):
        return tell(*args, **kwargs) if next(down, None) is None else _database_away()

    monkeypatch.setattr(study, "tell", restarting)
    sweep.recorder.record(study, trial, tracker, run_id, TrialResult(COMPLETE, scores={"identity.hit_rate": 0.75}))
    assert waits == [1, 2, 4, 8, 16]
    assert search.state_of(study, trial) == "COMPLETE" and study.trials[0].values == [0.75]
    assert tracker.client.get_run(run_id).info.status == "FINISHED"


def test_a_result_the_database_missed_is_recorded_from_the_trials_folder(
    ws: Workspace, write_spec, monkeypatch
) -> None:
    """Optuna's and MLflow's databases stay away longer than the sweep retries as a trial ends: the result
    kept in the trial's folder is recorded by the next look for dead workers' trials, in both, not failed as
    abandoned; a result.json another Optuna trial or MLflow run left in a folder is not taken for this one."""
    from harness import search
    from harness.trial import COMPLETE, TrialResult, write_result

    r = _recording(ws, write_spec)
    sweep, study, tracker, trial, run_id = r.sweep, r.study, r.tracker, r.trial, r.run_id
    other_trial, other_run = study.ask(), study.ask()
    for gone in (other_trial, other_run):
        gone.set_user_attr("worker", f"{socket.gethostname()}:999999999")  # its worker is gone
    _waits_of(sweep)
    _outage(monkeypatch, study, tracker)
    result = TrialResult(COMPLETE, scores={"identity.hit_rate": 0.75}, seconds={"time.total_s": 9.5})
    sweep.recorder.record(study, trial, tracker, run_id, result)
    kept = ws.root / "outputs" / "test" / "trial-000" / "result.json"
    assert search.state_of(study, trial) == "RUNNING"
    assert tracker.client.get_run(run_id).info.status == "RUNNING"
    assert any(f"its result is kept in {kept}" in note for note in sweep.progress.notes)
    write_result(kept.parent.with_name("trial-001"), other_trial._trial_id + 100, None, result)
    write_result(kept.parent.with_name("trial-002"), other_run._trial_id, "a deleted study's run", result)

    monkeypatch.undo()  # the databases are back
    sweep.recovery.reclaim(study, tracker, r.experiment)
    assert search.state_of(study, trial) == "COMPLETE" and study.trials[0].values == [0.75]
    assert study.trials[0].user_attrs["seconds"] == {"time.total_s": 9.5}
    run = tracker.client.get_run(run_id)
    assert (run.info.status, run.data.tags.get("harness.state")) == ("FINISHED", "COMPLETE")
    assert run.data.metrics["time.total_s"] == 9.5
    assert [search.state_of(study, t) for t in (other_trial, other_run)] == ["FAIL", "FAIL"]
    assert any(f"trial 0: recorded as COMPLETE from {kept}" in note for note in sweep.progress.notes)


def test_a_stopped_trials_kept_result_ends_its_run_as_killed(ws: Workspace, write_spec, monkeypatch) -> None:
    """Ctrl-C during an outage: the trial cut short is recorded from its folder later, and its MLflow run says
    KILLED (the user stopped it), as it would have had the database answered, not FAILED."""
    from harness import search
    from harness.trial import FAILED, TrialResult

    r = _recording(ws, write_spec)
    _waits_of(r.sweep, stopping=True)
    _outage(monkeypatch, r.study, r.tracker)
    stopped = TrialResult(FAILED, reason="interrupted", stopped=True)
    r.sweep.recorder.record(r.study, r.trial, r.tracker, r.run_id, stopped)
    monkeypatch.undo()
    r.sweep.recovery.reclaim(r.study, r.tracker, r.experiment)
    assert search.state_of(r.study, r.trial) == "FAIL"
    assert r.tracker.client.get_run(r.run_id).info.status == "KILLED"


def test_a_result_after_its_trial_was_closed_by_another_worker_is_recorded_as_a_trial(
    ws: Workspace, write_spec
) -> None:
    """This worker lost the database for longer than the heartbeat grace while its trial trained, so another
    worker closed the trial as FAIL; the result that comes back is recorded as a trial of its own (same params,
    constraints, MLflow run), once however often the recording is retried, and the report links the two."""
    from harness import search
    from harness.report.data import load_study
    from harness.trial import COMPLETE, FAILED, TrialResult

    spec = base_spec()
    spec["search"]["constraints"] = ["identity.hit_rate >= 0.5"]
    r = _recording(ws, write_spec, spec)
    params = search.suggest(r.trial, r.sweep.spec)
    closing = "no heartbeat from its worker for over 20 s (closed by another-host:7)"
    assert search.fail_running(r.study, r.study.trials[0], {search.REASON_ATTR: closing})
    result = TrialResult(COMPLETE, scores={"identity.hit_rate": 0.75}, seconds={"time.total_s": 9.5})
    r.sweep.recorder.record(r.study, r.trial, r.tracker, r.run_id, result)
    assert r.sweep.recorder.tell(r.study, r.trial, result) == (COMPLETE, 1), "a retried recording adds nothing"

    closed, late = r.study.trials
    assert len(r.study.trials) == 2 and closed.state == TrialState.FAIL
    assert (late.state, late.values, late.params) == (TrialState.COMPLETE, [0.75], params)
    assert late.constraints == {"identity.hit_rate >= 0.5": -0.25}
    assert late.user_attrs["recorded_from"] == 0 and late.user_attrs["mlflow_run_id"] == r.run_id
    assert "fail_reason" not in late.user_attrs and late.user_attrs["seconds"] == {"time.total_s": 9.5}
    run = r.tracker.client.get_run(r.run_id)
    assert (run.info.status, run.data.tags["harness.state"], run.data.tags["harness.trial"]) == (
        "FINISHED",
        COMPLETE,
        "1",
    )
    assert any("its result is recorded as trial 1" in note for note in r.sweep.progress.notes)
    record = load_study("test", ws.storage, ws.tracking)
    assert record.trials[0].reason == f"{closing}; its result came later and is trial 1"
    assert (record.trials[0].run_id, record.trials[1].run_id) == (None, r.run_id)

    failing = r.study.ask()  # a failed result is not worth a trial of its own: the closing stands
    assert search.fail_running(r.study, r.study.trials[2], {search.REASON_ATTR: closing})
    assert r.sweep.recorder.tell(r.study, failing, TrialResult(FAILED, reason="out of memory")) == (FAILED, None)
    assert len(r.study.trials) == 3


@pytest.mark.parametrize("room", [True, False], ids=["room", "--trials lowered"])
def test_a_dead_sweeps_trial_with_a_checkpoint_is_taken_over_not_failed(
    ws: Workspace, write_spec, monkeypatch, room: bool
) -> None:
    """A trial whose sweep on this host is gone (kill -9, a reboot) and whose training saved a checkpoint stays
    RUNNING and is the next claim: re-owned, same params and MLflow run, resumed from its newest complete
    checkpoint. Without one it fails as before; so does one whose worker is only silent (another host: it may
    still be writing there), one whose checkpoints a deleted study's trial left (another owner), and one the
    study no longer has room for (--trials lowered)."""
    from harness import recovery, search
    from harness.recording import RUN_ATTR
    from harness.trial import checkpoints_folder, trial_folder

    r = _recording(ws, write_spec)
    sweep, study, tracker = r.sweep, r.study, r.tracker
    out = ws.root / "outputs" / "test"
    trials = [study.ask() for _ in range(4)]  # resumable, no checkpoint, silent elsewhere, foreign checkpoints
    for i, trial in enumerate(trials):
        search.suggest(trial, sweep.spec)
        here = i != 2
        worker = f"{socket.gethostname()}:999999999" if here else "another-host:4242"
        trial.set_user_attr("worker", worker)
        trial.set_user_attr("worker_pid_namespace", recovery.pid_namespace())
        run_id = tracker.child_run(r.experiment, tracker.parent_run(r.experiment, "test"), "test", trial.number)
        trial.set_user_attr(RUN_ATTR, run_id)
        if i == 1:
            continue
        owner = (trial._trial_id + 100, run_id) if i == 3 else (trial._trial_id, run_id)
        trainer = checkpoints_folder(trial_folder(out, trial.number), *owner, fresh=True)
        for step, state in ((4, '{"global_step": 4}'), (8, '{"global_step": 8}'), (12, None), (16, "")):
            (trainer / f"checkpoint-{step}").mkdir()  # 12: killed while being saved; 16: a power loss emptied it
            if state is not None:
                (trainer / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    monkeypatch.setattr(search, "stale_trials", lambda study: [study.trials[trials[2].number]])
    r.trial.set_user_attr("worker", f"{socket.gethostname()}:999999999")  # _recording's own: failed, no checkpoint

    resumable, bare, silent, foreign = trials
    if not room:
        assert sweep._claim(study, tracker, r.experiment, target=0) is None, "the study is full"
        closed = study.trials[resumable.number]
        assert closed.state == TrialState.FAIL and "not resumed" in closed.user_attrs["fail_reason"]
        return
    claim = sweep._claim(study, tracker, r.experiment, target=10)
    assert claim.trial.number == resumable.number and claim.params == resumable.params
    assert claim.resume_from == trial_folder(out, resumable.number) / "trainer" / "checkpoint-8"
    assert claim.run_id == study.trials[resumable.number].user_attrs["mlflow_run_id"]
    assert study.trials[resumable.number].state == TrialState.RUNNING
    assert study.trials[resumable.number].user_attrs["worker"] == recovery.worker_id(), "re-owned"
    assert [search.state_of(study, t) for t in (bare, silent, foreign)] == ["FAIL", "FAIL", "FAIL"]
    assert tracker.client.get_run(claim.run_id).info.status == "RUNNING"
    sweep.recovery.reclaimed_at -= recovery.RECLAIM_EVERY_S  # the next claim looks for dead trials again
    again = sweep._claim(study, tracker, r.experiment, target=10)
    assert again.resume_from is None and again.trial.number == len(trials) + 1, "taken once: then a new draw"


def _fencing_elsewhere(call: str, folder: Path, claim: str) -> list[str]:
    """A process printing fencing.<call>(folder, claim), then waiting for its stdin to close."""
    code = f"import sys; from pathlib import Path; from harness import fencing; print(fencing.{call}"
    code += "(Path(sys.argv[1]), sys.argv[2]), flush=True); sys.stdin.read()"
    return [sys.executable, "-c", code, str(folder), claim]


def _holding(folder: Path, claim: str) -> subprocess.Popen:
    """Another process holding a trial folder's lock as a trial process does (fencing.join), until it is killed."""
    holder = subprocess.Popen(_fencing_elsewhere("join", folder, claim), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert holder.stdout.readline() == b"True\n"
    return holder


def _in_use_elsewhere(folder: Path, claim: str) -> str:
    """fencing.in_use as another process on this machine sees it (this one answers for its own holds itself)."""
    done = subprocess.run(_fencing_elsewhere("in_use", folder, claim), input="", capture_output=True, text=True)
    return done.stdout.strip()


def test_a_trial_from_another_container_here_is_taken_over_once_its_folder_is_free(
    ws: Workspace, write_spec, monkeypatch
) -> None:
    """Trials whose sweep ran in another container on this machine (same hostname and boot, its PIDs not ours, as
    after a restart in its pod): while a process holds a trial's folder lock it is left alone (heartbeats set
    aside here); once none does, it is taken over from its checkpoint at once, unless another worker (PID 1 of
    its own container too: the same worker id) claimed it since it was found. The same free lock says nothing
    about another machine's trial (its disk shared with this one): heartbeats decide that one."""
    from optuna.trial import Trial

    from harness import fencing, recovery, search
    from harness.recording import RUN_ATTR
    from harness.trial import checkpoints_folder, trial_folder

    r = _recording(ws, write_spec)
    sweep, study, tracker = r.sweep, r.study, r.tracker
    r.trial.set_user_attr("worker", f"{socket.gethostname()}:999999999")  # _recording's own: failed, no checkpoint
    monkeypatch.setattr(search, "stale_trials", lambda study: [])  # heartbeats say nothing here
    machines = [(socket.gethostname(), recovery.boot_id())] * 2 + [("host-b", "its-boot")]
    trials, folders, claims = [], [], []
    for host, boot in machines:
        trial = study.ask()
        search.suggest(trial, sweep.spec)
        folder = trial_folder(sweep.output_dir, trial.number)
        claim = fencing.new_claim()
        fencing.release(fencing.hold(folder, claim))  # as its sweep claimed it, then died
        trial.set_user_attr("claim", claim)
        trial.set_user_attr("worker", f"{host}:1")  # PID 1 of its container
        trial.set_user_attr("worker_pid_namespace", "pid:[1]")
        trial.set_user_attr("worker_boot_id", boot)
        run_id = tracker.child_run(r.experiment, tracker.parent_run(r.experiment, "test"), "test", trial.number)
        trial.set_user_attr(RUN_ATTR, run_id)
        trainer = checkpoints_folder(folder, trial._trial_id, run_id, fresh=True)
        (trainer / "checkpoint-4").mkdir()
        (trainer / "checkpoint-4" / "trainer_state.json").write_text('{"global_step": 4}')
        trials.append(trial), folders.append(folder), claims.append(claim)
    here, queued, elsewhere = trials

    holders = [_holding(folders[0], claims[0]), _holding(folders[1], claims[1])]
    try:
        claim = sweep._claim(study, tracker, r.experiment, target=10)
        assert claim.resume_from is None, "held folders: their container's trial processes still run"
        fencing.release(claim.folder_lock)
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()
    assert [search.state_of(study, t) for t in trials] == ["RUNNING"] * 3
    sweep.recovery.reclaimed_at -= recovery.RECLAIM_EVERY_S
    claim = sweep._claim(study, tracker, r.experiment, target=10)
    assert claim.trial.number == here.number and claim.resume_from.name == "checkpoint-4"
    assert study.trials[here.number].user_attrs["worker"] == recovery.worker_id(), "re-owned"
    assert _in_use_elsewhere(folders[0], study.trials[here.number].user_attrs["claim"]) == "True", "held by its claim"
    assert search.state_of(study, elsewhere) == "RUNNING", "another machine's trial is left to heartbeats"

    taken = Trial(study, queued._trial_id)
    other = recovery.own(study, taken, folders[1])  # another container's worker took it over meanwhile ...
    taken.set_user_attr("worker", f"{socket.gethostname()}:1")  # ... PID 1 of its container, as the dead one was
    again = sweep._claim(study, tracker, r.experiment, target=10)
    assert again.resume_from is None and again.trial.number not in {t.number for t in trials}, "not taken twice"
    for held in (claim.folder_lock, again.folder_lock, other):
        fencing.release(held)
    assert _in_use_elsewhere(folders[0], study.trials[here.number].user_attrs["claim"]) == "False"
    assert fencing.in_use(folders[0], claims[0]) is None, "the lock names another claim now: it cannot tell"
    assert fencing.in_use(trial_folder(sweep.output_dir, 99), claims[2]) is None, "no lock file: nothing to tell"
    assert fencing.in_use(folders[2], None) is None, "no claim recorded (an older harness's trial)"


def test_a_claim_that_fails_lets_go_of_its_folder(ws: Workspace, write_spec, monkeypatch) -> None:
    """A claim that fails after taking its trial's folder (the database, a broken sampler) leaves the folder
    free: the trial is then closed as any dead claim's, not held forever by the sweep that failed it."""
    from harness import fencing, search
    from harness.recovery import RECLAIM_EVERY_S
    from harness.tracking import Tracker
    from harness.trial import trial_folder

    sweep, study = quiet_sweep(ws, write_spec(base_spec()))
    tracker = Tracker(ws.tracking)

    def broken(trial, spec):
        raise RuntimeError("the sampler broke")

    monkeypatch.setattr(search, "suggest", broken)
    with pytest.raises(RuntimeError):
        sweep._claim(study, tracker, tracker.experiment("test"), target=10)
    (trial,) = study.trials
    assert fencing.in_use(trial_folder(sweep.output_dir, trial.number), trial.user_attrs["claim"]) is False
    monkeypatch.undo()
    sweep.recovery.reclaimed_at -= RECLAIM_EVERY_S
    sweep._claim(study, tracker, tracker.experiment("test"), target=10)
    assert search.state_of(study, trial) == "FAIL", "closed at the next look"


def test_a_trial_process_writes_only_under_its_claim(tmp_path: Path) -> None:
    """fencing.join: a trial process holds its folder when the lock file names its sweep's claim, and must not
    write when it names another (the trial was taken over before the process started) or is missing; a job
    whose sweep holds nothing (the baseline, a lockless filesystem) goes on."""
    from harness import fencing

    mine, theirs = fencing.new_claim(), fencing.new_claim()
    held = fencing.hold(tmp_path, theirs)
    try:
        assert not fencing.join(tmp_path, mine), "taken over: the file names another claim"
        assert fencing.join(tmp_path, theirs)
        assert not fencing.join(tmp_path / "gone", mine), "no lock file"
        assert fencing.join(tmp_path / "gone", None), "no lock in play"
    finally:
        fencing.release(held)
    assert _in_use_elsewhere(tmp_path, theirs) == "True", "the joined hold lasts as long as this process"


def test_keep_models_leaves_the_best_trials_models_only(ws: Workspace, write_spec) -> None:
    """search.keep_models: 2 keeps the models of the best two complete trials (feasible first), every trial of a
    configuration re-trained with new seeds, and the folder a late result ran in; the others' are removed once
    their trial has written its result, and `harness eval` of a removed one says why."""
    from optuna.trial import create_trial

    from harness.evaluate import resolve_target
    from harness.models import ModelError
    from harness.search import RECORDED_FROM_ATTR, REPLICATE_ATTR
    from harness.trial import trial_folder

    spec = base_spec(search__keep_models=2, search__constraints=["identity.leak_rate <= 0.5"])
    sweep, study = quiet_sweep(ws, write_spec(spec))
    limit = "identity.leak_rate <= 0.5"
    for value, violation in ((0.2, 0.0), (0.95, 0.3), (0.5, 0.0), (0.7, 0.0), (0.1, 0.0)):
        study.add_trial(create_trial(values=[value], constraints={limit: violation}))
    study.add_trial(create_trial(state=TrialState.FAIL))  # 5: closed by another worker; its result came late, as 6
    study.add_trial(create_trial(values=[0.6], constraints={limit: 0.0}, user_attrs={RECORDED_FROM_ATTR: 5}))
    study.add_trial(create_trial(values=[0.3], constraints={limit: 0.0}, user_attrs={REPLICATE_ATTR: 4}))  # 7
    study.add_trial(create_trial(state=TrialState.FAIL))  # 8: its trial process is still writing (no result.json)
    for t in study.trials:
        folder = trial_folder(sweep.output_dir, t.number)
        (folder / "model").mkdir(parents=True)
        (folder / "trial_config.yaml").write_text(json.dumps({"evals": spec["evals"], "model": {"path": "toy"}}))
        if t.number != 8:
            (folder / "result.json").write_text("{}")

    sweep._keep_best_models(study)
    kept = [t.number for t in study.trials if (trial_folder(sweep.output_dir, t.number) / "model").is_dir()]
    # 0.95 breaks the constraint; 0.7 and 0.6 (in trial 5's folder) are the best feasible; 4 was re-trained as 7
    assert kept == [3, 4, 5, 7, 8]
    with pytest.raises(ModelError, match="the trial's model was removed, not among the best 2 trials \\(search"):
        resolve_target(str(trial_folder(sweep.output_dir, 1)), None, None, ws.root)


def test_keep_models_keeps_the_pareto_fronts_of_a_multi_objective_study() -> None:
    """The report recommends a trial of the (feasible) Pareto front, however the front is scaled: all of it stays."""
    from optuna.trial import create_trial

    from harness import search
    from harness.spec import SweepSpec

    objectives = [
        {"metric": "identity.hit_rate", "direction": "maximize"},
        {"metric": "bench.retention", "direction": "maximize"},
    ]
    spec = SweepSpec.model_validate(base_spec(search__keep_models=1, search__objectives=objectives))
    limit = "bench.retention >= 0.5"
    points = [(0.9, 0.2, 0.3), (0.5, 0.6, 0.0), (0.7, 0.55, 0.0), (0.4, 0.5, 0.0), (0.1, 0.1, 0.0)]
    trials = [create_trial(values=[a, b], constraints={limit: c}) for a, b, c in points]
    for number, trial in enumerate(trials):
        trial.number = number
    # 0 is on the front of all trials (infeasible); 1 and 2 on both fronts; 3 and 4 are dominated
    assert search.kept_models(trials, spec) == {0, 1, 2}


def test_a_full_fine_tune_whose_models_would_fill_the_disk_is_told_at_the_start(
    ws: Workspace, write_spec, real_shape_model_path: Path, monkeypatch
) -> None:
    """Every trial saves a whole model: the sweep says what the trials left need against the free space, and how
    search.keep_models bounds it. The estimate (parameters on the meta device) is the saved model's size."""
    import shutil
    from types import SimpleNamespace

    from harness import models

    size = models.parameter_count(str(real_shape_model_path)) * models.weight_bytes("float32")
    on_disk = sum(f.stat().st_size for f in real_shape_model_path.glob("*.safetensors"))
    assert size == pytest.approx(on_disk, rel=0.01)

    def notes(free: int, train: dict | None = None, **search: object) -> list[str]:
        spec = base_spec(model__name=str(real_shape_model_path), **{f"search__{k}": v for k, v in search.items()})
        spec["train"] |= train or {}
        sweep, _ = quiet_sweep(ws, write_spec(spec))
        monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(free=free))
        sweep._disk_note(8)
        return sweep.progress.notes

    assert notes(free=100 * size) == []
    (told,) = notes(free=4 * size)
    assert "8 more of them need about" in told and "set search.keep_models: N" in told
    assert notes(free=4 * size, keep_models=2) == [], "the best 2 and the one running fit"
    (told,) = notes(free=2 * size, keep_models=2)
    assert "3 more of them" in told and "lower search.keep_models" in told
    for number in (0, 1):  # a resumed sweep: the models on disk already left the free space
        (ws.root / "outputs" / "test" / f"trial-00{number}" / "model").mkdir(parents=True)
    assert notes(free=2 * size, keep_models=2) == []
    # with checkpoints, each running trial also holds its newest: weights and AdamW's moments (float32 here: 3x)
    (told,) = notes(free=2 * size, train={"save_strategy": "steps", "save_steps": 10}, keep_models=2)
    assert "1 more of them and a checkpoint of about" in told and f"need about {4 * size / 1e9:.1f} GB" in told
    # a spec that sets save_total_limit keeps that many checkpoints of every trial left
    (told,) = notes(free=20 * size, train={"save_strategy": "steps", "save_steps": 10, "save_total_limit": 2})
    assert "8 more of them and 2 checkpoint(s) of about" in told and f"need about {56 * size / 1e9:.1f} GB" in told
    # null keeps every checkpoint: max_steps / save_steps of them (6 / 2)
    (told,) = notes(free=20 * size, train={"save_strategy": "steps", "save_steps": 2, "save_total_limit": None})
    assert "8 more of them and 3 checkpoint(s) of about" in told and f"need about {80 * size / 1e9:.1f} GB" in told


def test_a_claim_survives_a_lock_that_cannot_be_released(ws: Workspace, write_spec) -> None:
    """The database drops as the study lock is released after a claim: the trial, created and owned under the
    lock, is still this slot's to run (dropped, it would have sat RUNNING as this process's, run by nobody)."""
    import contextlib

    sweep, study = quiet_sweep(ws, write_spec(base_spec()))
    sweep.recovery.reclaimed_at = time.monotonic()  # no look for dead workers' trials: nothing is dead

    @contextlib.contextmanager
    def held():
        yield
        _database_away()

    sweep.lock = SimpleNamespace(held=held)
    claim = sweep._claim(study, None, "", target=1)
    assert claim.trial.number == 0 and sweep._live == {0}
    assert any("the study lock could not be released" in note for note in sweep.progress.notes)


@pytest.mark.parametrize(("down_for", "ours_running"), [(3, False), (99, False), (99, True)])
def test_claims_wait_out_a_database_restart(ws: Workspace, write_spec, down_for: int, ours_running: bool) -> None:
    """Claims that fail (the database is away) are no failed trials: they are retried with the waits a
    result's recording has, and only after about a minute of refusals, with no trial of this process still
    running (its result is to be recorded), does the slot give up, saying why."""
    sweep, _ = quiet_sweep(ws, write_spec(base_spec()))
    waits = _waits_of(sweep)
    sweep._live.update({7} if ours_running else set())
    refusals = iter(range(down_for))

    def claim(*args):
        if len(waits) == 8:
            sweep._live.clear()  # the other slot's trial ended (its result kept)
        return None if next(refusals, None) is None else _database_away()  # None: the study is full

    sweep._claim = claim
    sweep._claim_and_run(SimpleNamespace(study=None, tracker=None, experiment="", target=1), device=None)
    assert sweep._in_a_row == 0, "no trial failed"
    if down_for == 3:
        assert waits == [1, 2, 4] and sweep._unreachable is None
        return
    assert waits == [1, 2, 4, 8, 16, 32] + ([32, 32] if ours_running else [])
    assert sweep._unreachable.startswith("OperationalError: (builtins.Exception) could not connect to server")


def test_a_sweep_being_stopped_tries_twice(ws: Workspace, write_spec) -> None:
    sweep, _ = quiet_sweep(ws, write_spec(base_spec()))
    waits = _waits_of(sweep, stopping=True)
    assert sweep.recorder.retrying("record trial 3 in Optuna", _database_away) is None
    assert waits == [1]
    assert sweep.progress.notes[-1].startswith("could not record trial 3 in Optuna: OperationalError")


def test_silent_heartbeats_are_not_closed_right_after_an_outage(ws: Workspace, write_spec, monkeypatch) -> None:
    """Every worker's heartbeats pause with the database: for GRACE_S after this process last failed to reach
    it, another host's silent trial may be alive and about to beat; after that it is closed."""
    from harness import search
    from harness.stores import GRACE_S

    sweep, study = quiet_sweep(ws, write_spec(base_spec()))
    trial = study.ask()
    trial.set_user_attr("worker", "another-host:4242")
    monkeypatch.setattr(search, "stale_trials", lambda study: study.get_trials(states=(TrialState.RUNNING,)))
    sweep.recorder.trouble()
    sweep.recovery.reclaim(study, _Quiet(), "no experiment")
    assert search.state_of(study, trial) == "RUNNING"
    sweep.recorder._trouble_at -= GRACE_S
    sweep.recovery.reclaim(study, _Quiet(), "no experiment")
    assert search.state_of(study, trial) == "FAIL"


def test_a_workers_pid_is_looked_up_only_where_it_means_that_process() -> None:
    """Containers on the host's network share its hostname, not its process ids: a PID from another PID
    namespace is left to heartbeats, never looked up here; without heartbeats (a journal file), or from a
    harness that recorded no namespace, a PID on this hostname is all there is to go on."""
    from optuna.trial import create_trial

    from harness.recovery import boot_id, is_orphan, pid_namespace
    from harness.worker import process_started

    def owned(**attrs: object):
        return create_trial(value=0.0, user_attrs={"worker": f"{socket.gethostname()}:999999999", **attrs})

    assert is_orphan(owned(worker_pid_namespace=pid_namespace()), set()), "no such process here: gone"
    assert not is_orphan(owned(worker_pid_namespace="pid:[1]"), set())
    assert is_orphan(owned(worker_pid_namespace="pid:[1]"), set(), heartbeats=False)
    assert is_orphan(owned(), set())
    mine = f"{socket.gethostname()}:{os.getpid()}"  # a live PID, recorded before this machine restarted
    assert is_orphan(owned(worker=mine, worker_boot_id="an earlier boot", worker_pid_namespace="pid:[1]"), set())
    assert not is_orphan(owned(worker=mine, worker_boot_id=boot_id(), worker_pid_namespace="pid:[1]"), set())
    # its sweep gone, its trial process still running (it stops within a second or two): not yet; a reused PID is
    # no trial process of it
    here = {"worker_pid_namespace": pid_namespace(), "trial_pid": os.getpid()}
    assert not is_orphan(owned(**here, trial_pid_started=process_started(os.getpid())), set())
    assert is_orphan(owned(**here, trial_pid_started="1"), set())


@pytest.mark.parametrize("space", [{"beta": {"choice": [0.1, 0.2]}}, {"beta": {"choice": [0.1]}}])
def test_claims_run_the_search_then_its_seed_replicates(ws: Workspace, write_spec, space: dict) -> None:
    """Claimed and told by hand (no training): search trials first, then, once none runs, the replicates of
    the best; a used-up space (one grid point for two trials) goes straight to its replicates."""
    from harness.sweep import WAIT

    spec = base_spec()
    spec["search"] |= {"sampler": "grid", "trials": 2, "space": space, "replicates": {"top_k": 1, "seeds": 3}}
    sweep, study = quiet_sweep(ws, write_spec(spec))

    def claim():
        return sweep._claim(study, _Quiet(), "no experiment", 2)

    assert sweep._work_left(study, 2)
    first = claim()
    second = claim() if len(space["beta"]["choice"]) > 1 else None  # one grid point: the space is used up
    if second is not None:
        assert claim() == WAIT  # both search trials run: the best configuration is not known yet
        study.tell(second.trial, 0.1)
    study.tell(first.trial, 0.9)
    replicates = [claim(), claim()]
    assert [(c.trial.user_attrs["replicate_of"], c.seed) for c in replicates] == [(0, 1), (0, 2)]
    assert all(c.params == first.params for c in replicates)
    assert claim() == WAIT  # the replicates run
    assert sweep._work_left(study, 2)
    for c in replicates:
        study.tell(c.trial, 0.8)
    assert claim() is None  # done: resuming now runs nothing
    assert not sweep._work_left(study, 2)  # so a resumed sweep does not wait for the trials' fork server
