"""Several `harness sweep` workers on one study through PostgreSQL (Optuna and MLflow), as on a GPU box
or across hosts, or through SQLite from containers on one host: exact trial counts, no repeated points, a
dead worker's trial reclaimed (resumed, when its container restarts on the same machine) and a live one's left
alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from support import Workspace, base_spec, missing_for_workers

from harness.stores import GRACE_S


def distinct(trials: list) -> bool:
    points = [json.dumps(t.params, sort_keys=True) for t in trials]
    return len(set(points)) == len(points)


def start(ws: Workspace, path, n: int) -> list[subprocess.Popen]:
    args = ws.args(path)
    return [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(n)]


def other_host(args: list[str]) -> list[str]:
    """The command as on another machine: UTS and mount namespaces of its own, whose hostname is other-host and
    whose boot id is another kernel's. To the rest its PIDs mean nothing and a lock it held in the shared
    outputs/ proves nothing (a shared disk seen from two machines), so only its heartbeats can tell that it died."""
    other = (
        'boot=$(mktemp) && echo 00000000-0000-4000-8000-000000000000 > "$boot" && '
        'mount --bind "$boot" /proc/sys/kernel/random/boot_id && rm "$boot" && hostname other-host && exec "$@"'
    )
    probe = subprocess.run(["unshare", "--uts", "--mount", "sh", "-c", other, "sh", "true"], capture_output=True)
    if probe.returncode != 0:
        missing_for_workers(f"cannot make UTS and mount namespaces (unshare needs root): {probe.stderr.decode()}")
    return ["unshare", "--uts", "--mount", "sh", "-c", other, "sh", *args]


def held_by_other_host(ws: Workspace) -> int | None:
    """The number of a trial the other-host worker holds and is training, once there is one."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        trials = ws.study().trials
    except (KeyError, SQLAlchemyError):
        return None
    for t in trials:
        if t.state == TrialState.RUNNING and t.user_attrs.get("worker", "").startswith("other-host:"):
            run_id = t.user_attrs.get("mlflow_run_id")
            if run_id and MlflowClient(ws.tracking).get_metric_history(run_id, "loss"):
                return t.number
    return None


@pytest.mark.slow
def test_a_worker_killed_on_another_host(new_database: Callable[[], str], ws: Workspace, write_spec) -> None:
    ws.storage, ws.tracking = new_database(), new_database()
    spec = base_spec()
    spec["search"]["trials"] = 4
    spec["train"]["max_steps"] = 10  # long enough to catch the other-host worker training
    path = write_spec(spec)
    doomed = subprocess.Popen(
        other_host(ws.args(path)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    workers: list[subprocess.Popen] = []
    try:
        # the others start once it trains: started together, they could take every trial while it is between
        # two of them and the look misses it (CI saw that on a busy machine); alone it cannot run out of trials
        while (held := held_by_other_host(ws)) is None:
            assert doomed.poll() is None, "the other-host worker ended before it held a trial"
            time.sleep(0.5)
        workers = start(ws, path, 2)
    finally:
        os.killpg(doomed.pid, signal.SIGKILL)  # the worker and its trial process, as a host dies
        doomed.wait()
    killed_at = time.monotonic()
    outputs = [w.communicate(timeout=900)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs

    trials = ws.study().trials
    states = {t.number: t.state for t in trials}
    assert sum(s == TrialState.COMPLETE for s in states.values()) == 4, "exactly the declared trials: no overshoot"
    failed = [n for n, s in states.items() if s == TrialState.FAIL]
    # the trial it held when the kill landed: `held`, or, if `held` ended in the moment between the look and the
    # kill, the one it claimed next (a slot claims its next trial as soon as one ends)
    assert len(failed) == 1 and failed[0] >= held, (held, states)
    dead = trials[failed[0]]
    assert dead.user_attrs["worker"].startswith("other-host:"), dead.user_attrs
    assert "no heartbeat" in dead.user_attrs["fail_reason"]
    assert distinct(trials), "the workers draw different points"
    survivors = {t.user_attrs["worker"] for t in trials if t.state == TrialState.COMPLETE}
    # both other workers completed trials; the dead one may have completed `held` just before the kill
    assert len(survivors - {dead.user_attrs["worker"]}) == 2, survivors
    parents, children = ws.runs()
    assert [r.info.status for r in parents] == ["FINISHED"], "the workers share the study's parent run"
    assert {r.info.run_id for r in children} == {t.user_attrs["mlflow_run_id"] for t in trials}
    assert all(r.info.status != "RUNNING" for r in children)
    dead_run = next(r for r in children if r.info.run_id == dead.user_attrs["mlflow_run_id"])
    assert dead_run.info.status == "FAILED" and "no heartbeat" in dead_run.data.tags["harness.failure_reason"]
    print(f"reclaimed and finished {time.monotonic() - killed_at:.0f} s after the kill (grace {GRACE_S} s)")


def own_pids(args: list[str]) -> list[str]:
    """The command in a PID namespace of its own, as in a container on the host's network: same hostname,
    and it is PID 1, as every other such worker is in its own namespace."""
    command = ["unshare", "--pid", "--fork", "--mount-proc"]
    probe = subprocess.run([*command, "true"], capture_output=True)
    if probe.returncode != 0:
        missing_for_workers(f"cannot make a PID namespace (unshare --pid needs root): {probe.stderr.decode()}")
    return [*command, *args]


@pytest.mark.slow
@pytest.mark.parametrize("store", ["sqlite", "journal"])
def test_workers_in_containers_on_one_host_leave_each_others_trials_alone(ws: Workspace, write_spec, store) -> None:
    """Each worker is PID 1 of its own container: its PIDs say nothing of the other's trials. With SQLite the
    heartbeats show them alive; a journal file has none, and the shared trial folders' locks do."""
    if store == "journal":
        ws.storage = str(ws.root / "journal.log")
    spec = base_spec()
    spec["search"]["trials"] = 6
    spec["train"]["max_steps"] = 10  # enough work that a worker starting late still finds trials to run
    path = write_spec(spec)
    workers = [
        subprocess.Popen(own_pids(ws.args(path)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=900)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    trials = ws.study().trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6, [t.user_attrs.get("fail_reason") for t in trials]
    owners = {t.user_attrs["worker"] for t in trials}
    assert len({t.user_attrs["worker_pid_namespace"] for t in trials}) == 2, "both workers ran trials"
    assert {o.rpartition(":")[2] for o in owners} == {"1"}, "the same worker id in each container"
    assert all(r.info.status == "FINISHED" for r in ws.runs()[1])


@pytest.mark.slow
def test_a_sweep_restarted_in_a_new_container_resumes_its_trial_at_once(ws: Workspace, write_spec) -> None:
    """A container restarted in its pod (same hostname and machine, a new PID namespace: the old sweep's PIDs mean
    nothing to the new one): its sweep finds the trial folder's lock free (harness.fencing) and takes the trial
    over from its last checkpoint, as a rerun on one host does, instead of failing it once its heartbeats stop."""
    from harness.training import last_checkpoint

    spec = base_spec()
    spec["search"]["trials"] = 1
    spec["train"] |= {"max_steps": 200, "save_strategy": "steps", "save_steps": 4}  # long enough to be cut short
    path = write_spec(spec)
    trainer = ws.root / "outputs" / "test" / "trial-000" / "trainer"
    first = subprocess.Popen(
        own_pids(ws.args(path)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        while last_checkpoint(trainer) is None:
            assert first.poll() is None, "the first container's sweep ended before it saved a checkpoint"
            time.sleep(0.5)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the container stops: its PID 1 dies, and every process with it
        first.wait()

    restarted = subprocess.run(own_pids(ws.args(path)), capture_output=True, text=True, timeout=900)
    out = restarted.stdout + restarted.stderr
    assert restarted.returncode == 0, out
    assert "its training resumes from" in out
    (trial,) = ws.study().trials
    assert trial.state == TrialState.COMPLETE, trial.user_attrs.get("fail_reason")
    _, (run,) = ws.runs()
    assert run.info.run_id == trial.user_attrs["mlflow_run_id"] and "harness.resumed_from" in run.data.tags
    client = MlflowClient(ws.tracking)
    assert len(client.get_metric_history(run.info.run_id, "identity.hit_rate")) == 1, "scored once"
    assert max(m.step for m in client.get_metric_history(run.info.run_id, "loss")) == 200


@pytest.fixture
def mlflow_server(new_database: Callable[[], str], tmp_path_factory: pytest.TempPathFactory):
    """A real `mlflow server`: PostgreSQL backend store, artifacts served by the server (as on a team's box)."""
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    artifacts = tmp_path_factory.mktemp("mlflow-artifacts")
    args = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", new_database(), "--artifacts-destination", str(artifacts), "--serve-artifacts",
        "--workers", "1",
    ]  # fmt: skip
    server = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            assert server.poll() is None, "mlflow server exited at start"
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.mark.slow
def test_hosts_share_a_tracking_server(new_database, mlflow_server: str, tmp_path, write_spec) -> None:
    """Two workers started from different folders (as on two hosts) and a report built from a third one."""
    from harness.report.data import attach_artifacts, load_study

    storage = new_database()
    spec = base_spec()
    spec["search"]["trials"] = 2
    path = write_spec(spec)
    hosts = [tmp_path / "host-a", tmp_path / "host-b", tmp_path / "laptop"]
    for folder in hosts:
        folder.mkdir()
    harness, common = [sys.executable, "-m", "harness.cli"], ["--storage", storage, "--tracking-uri", mlflow_server]
    sweep = [*harness, "sweep", str(path), *common]  # default --output-dir and --report-dir: under each folder
    workers = [
        subprocess.Popen(sweep, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for folder in hosts[:2]
    ]
    outputs = [w.communicate(timeout=900)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    assert not any("View run" in out for out in outputs), "MLflow's links at every run's end: the sweep says where"
    report = subprocess.run([*harness, "report", "test", *common], cwd=hosts[2], capture_output=True, text=True)
    assert report.returncode == 0, report.stdout + report.stderr
    assert (hosts[2] / "reports" / "test" / "index.html").is_file()
    ui = [*harness, "ui", "test", "--tracking-uri", mlflow_server]  # as each worker's last line says
    shown = subprocess.run(ui, cwd=hosts[2], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert f"the tracking server serves it at {mlflow_server}" in shown.stdout
    assert f"test: {mlflow_server}/#/experiments/" in shown.stdout

    record = load_study("test", storage, mlflow_server)
    attach_artifacts(record, record.trials)
    assert [t.state for t in record.trials] == ["COMPLETE"] * 2
    assert all(t.generations and t.curves.get("loss") for t in record.trials), "samples and curves of every trial"
    assert record.base_generations, "the base model's answers, logged by whichever worker scored it first"
