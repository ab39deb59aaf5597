"""User errors on the command line: one message naming what is wrong, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import base_spec
from typer.testing import CliRunner

from harness.cli import app


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, list(args))

    return invoke


def written(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != "spec.yaml")


def test_sweep_with_a_storage_in_a_missing_folder(run, write_spec, tmp_path: Path) -> None:
    spec = write_spec(base_spec())
    done = run("sweep", str(spec), "--storage", "sqlite:///missing-dir/optuna.db", "--tracking-uri", "sqlite:///m.db")
    assert done.exit_code == 2
    assert done.output.strip().splitlines() == [
        "error: --storage sqlite:///missing-dir/optuna.db: folder missing-dir does not exist; create it first"
    ]
    assert written(tmp_path) == []


def test_sweep_with_an_unreachable_database_hides_the_password(run, write_spec, tmp_path: Path) -> None:
    spec = write_spec(base_spec())
    url = "postgresql://ann:s3cret@127.0.0.1:1/optuna"  # port 1: nothing listens
    done = run("sweep", str(spec), "--storage", url, "--tracking-uri", "sqlite:///m.db")
    assert done.exit_code == 2, done.output
    assert len(done.output.strip().splitlines()) == 1 and "s3cret" not in done.output
    assert "cannot open the Optuna storage postgresql://ann:***@127.0.0.1:1/optuna" in done.output


@pytest.mark.parametrize("name", ["../etc", "a'b"])
def test_report_checks_study_names(run, name: str, tmp_path: Path) -> None:
    done = run("report", name)
    assert done.exit_code == 2 and f"invalid study name {name!r}" in done.output
    assert written(tmp_path) == []


def test_eval_checks_the_experiment_name_before_scoring(run, tmp_path: Path) -> None:
    done = run("eval", "toy", "--log-to", "bad/name")
    assert done.exit_code == 2 and "invalid experiment (--log-to) name 'bad/name'" in done.output
    assert written(tmp_path) == []


def test_ui_names_a_study_that_is_not_there(run, tmp_path: Path) -> None:
    done = run("ui", "nope", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert done.exit_code == 2 and "no study 'nope'" in done.output


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--devices", "0"], "no CUDA device"), (["--devices", "0", "--parallel", "2"], "not both")],
)
def test_devices_are_checked(run, write_spec, tmp_path: Path, args: list[str], message: str) -> None:
    done = run("sweep", str(write_spec(base_spec())), *args)
    assert done.exit_code == 2 and message in done.output
    assert written(tmp_path) == []


@pytest.mark.parametrize(
    ("outcome", "code", "message"),
    [
        ({"unreachable": "OperationalError: connection refused"}, 1, "Stopped: no trial could be claimed for about"),
        ({"interrupted": True}, 130, "Interrupted. Run the same command to resume."),
    ],
)
def test_a_sweep_that_lost_its_database_says_so(run, write_spec, monkeypatch, outcome, code, message) -> None:
    """No count of finished trials without the database: the message says what happened and how to go on."""
    from harness.sweep import Sweep, SweepOutcome

    monkeypatch.setattr(Sweep, "run", lambda self: SweepOutcome("test", 3, None, 0, **outcome))
    done = run("sweep", str(write_spec(base_spec())), "--tracking-uri", "sqlite:///m.db")
    assert done.exit_code == code
    assert done.output.strip().startswith(message) and "None" not in done.output
