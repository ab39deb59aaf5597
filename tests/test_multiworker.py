"""Two `harness sweep` workers on one study through PostgreSQL (Optuna and MLflow), as on a GPU box."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from optuna.trial import TrialState
from support import Workspace, base_spec

SERVER = os.environ.get("HARNESS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")


def _missing(why: str) -> None:
    """Skip on a laptop without PostgreSQL; fail in CI, which sets HARNESS_REQUIRE_POSTGRES=1."""
    if os.environ.get("HARNESS_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"HARNESS_REQUIRE_POSTGRES=1 but {why}")
    pytest.skip(why)


@pytest.fixture
def databases() -> Iterator[tuple[str, str]]:
    """Two fresh databases (Optuna and MLflow each keep their own alembic version table)."""
    try:
        import psycopg
    except ImportError:
        _missing("the psycopg driver is not installed (pip install -e '.[postgres]')")
    try:
        admin = psycopg.connect(f"{SERVER}/test", connect_timeout=3, autocommit=True)
    except psycopg.OperationalError as exc:
        _missing(f"PostgreSQL not reachable at {SERVER} (set HARNESS_TEST_POSTGRES): {exc}")
    names = [f"harness_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("optuna", "mlflow")]
    with admin.cursor() as cur:
        for name in names:
            cur.execute(f"CREATE DATABASE {name}")
    yield f"{SERVER}/{names[0]}", f"{SERVER}/{names[1]}"
    with admin.cursor() as cur:
        for name in names:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


@pytest.mark.slow
def test_two_workers_share_one_study(databases: tuple[str, str], ws: Workspace, write_spec) -> None:
    ws.storage, ws.tracking = databases
    spec = base_spec()
    spec["search"]["trials"] = 4
    path = write_spec(spec)
    workers = [
        subprocess.Popen(ws.args(path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)
    ]
    outputs = [w.communicate(timeout=900)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs

    trials = ws.study().trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) >= 4 and not [t for t in trials if t.state == TrialState.RUNNING]
    assert len({t.user_attrs["worker"] for t in complete}) == 2, "both workers ran trials"
    parents, children = ws.runs()
    assert len(parents) == 1, "workers share the study's parent run"
    assert {r.info.run_id for r in children} == {t.user_attrs["mlflow_run_id"] for t in trials}
