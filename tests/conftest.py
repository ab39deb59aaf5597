"""Shared fixtures: offline libraries, one toy-world build per machine, tiny specs to run."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

# One torch (OpenMP) thread per process, set before anything imports torch, and inherited by every
# sweep, worker and trial process a test starts: the toy model's matrices are too small to gain from
# more, and on a 2-core box running several processes (workers, trials, the pytest process) extra
# threads wait on each other: a toy training step measured 3-6x slower with 2 threads than with 1.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import yaml  # noqa: E402
from support import ROOT, Workspace, missing_for_workers  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The toy world is keyed by its recipe hash, so one cached build serves every test run.
os.environ.setdefault("HARNESS_CACHE_DIR", str(ROOT / ".pytest_cache" / "harness"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", help="also run tests marked slow (CI does)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def toy_model_path() -> Path:
    from harness.toy import ensure_toy_model

    return ensure_toy_model(Path(os.environ["HARNESS_CACHE_DIR"]))


@pytest.fixture(scope="session")
def toy_model(toy_model_path: Path):
    from harness import models

    return models.load(str(toy_model_path))


@pytest.fixture(scope="session")
def real_shape_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder of a real model's shape: random-init Qwen2 layout, 151,936-token vocabulary, a byte-level
    BPE tokenizer with Qwen's ChatML template; tiny hidden size and 2 layers (built in a second or two)."""
    from harness.toy import real_shape

    return real_shape.save(tmp_path_factory.mktemp("real-shape") / "model")


@pytest.fixture(scope="session")
def real_shape_model(real_shape_model_path: Path):
    from harness import models

    return models.load(str(real_shape_model_path))


@pytest.fixture
def write_spec(tmp_path: Path):
    """write_spec(dict) -> path of a YAML spec file in the test's folder."""

    def write(spec: dict, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path

    return write


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    """A fresh folder for one sweep's storage, tracking store, outputs and report."""
    return Workspace(tmp_path)


# ---------------------------------------------------------------- PostgreSQL (many workers)

POSTGRES = os.environ.get("HARNESS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")


@pytest.fixture
def new_database() -> Iterator[Callable[[], str]]:
    """new_database() -> the URL of a fresh PostgreSQL database, dropped after the test."""
    try:
        import psycopg
    except ImportError:
        missing_for_workers("the psycopg driver is not installed (pip install -e '.[postgres]')")
    try:
        admin = psycopg.connect(f"{POSTGRES}/test", connect_timeout=3, autocommit=True)
    except psycopg.OperationalError as exc:
        missing_for_workers(f"PostgreSQL not reachable at {POSTGRES} (set HARNESS_TEST_POSTGRES): {exc}")
    names: list[str] = []

    def create() -> str:
        names.append(f"harness_{uuid.uuid4().hex[:10]}")
        admin.execute(f"CREATE DATABASE {names[-1]}")
        return f"{POSTGRES}/{names[-1]}"

    yield create
    for name in names:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


@pytest.fixture
def postgres_url(new_database: Callable[[], str]) -> str:
    return new_database()
