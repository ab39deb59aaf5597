"""Report fixtures: hand-built studies (fast), real tiny sweeps (slow, once per session), Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from support import ROOT, base_spec

from harness.report.data import COMPLETE, StudyRecord, TrialRecord
from harness.report.live import ReportTarget

CHROMIUM = os.environ.get("HARNESS_CHROMIUM", "/usr/bin/chromium")
HOSTILE = "<script>window.__pwned = 1</script><b>bold</b> & <!-- x"  # must show as text, never run


# ---------------------------------------------------------------- hand-built studies


@pytest.fixture
def bare_study(tmp_path: Path) -> ReportTarget:
    """A study of three finished trials in Optuna only (no MLflow store): the cheapest page there is."""
    import optuna

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="bare", storage=storage, direction="maximize")
    study.set_user_attr("objectives", ["identity.hit_rate"])
    for beta in (0.1, 0.3, 0.2):
        trial = study.ask({"beta": optuna.distributions.FloatDistribution(0.01, 1.0, log=True)})
        trial.set_user_attr("scores", {"identity.hit_rate": beta * 2})
        study.tell(trial, beta * 2)
    return ReportTarget(["bare"], storage, f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "report")


def _items(hits: int, n: int = 40) -> list[float]:
    return [1.0] * hits + [0.0] * (n - hits)


@pytest.fixture
def make_trial() -> Callable[..., TrialRecord]:
    def make(number: int, value: float | list[float] | None = None, state: str = COMPLETE, **kw) -> TrialRecord:
        values = None if value is None else value if isinstance(value, list) else [value]
        hit = values[0] if values else 0.0
        scores = {"identity.hit_rate": hit, **kw.pop("scores", {})}
        trial = TrialRecord(number, state, params=kw.pop("params", {"beta": 0.1 * (number + 1)}), values=values)
        trial.scores = scores if values else {}
        trial.items = kw.pop("items", {"identity.hit_rate": _items(round(hit * 40))} if values else {})
        trial.generations = kw.pop("generations", [])
        for key, value_ in kw.items():
            setattr(trial, key, value_)
        return trial

    return make


@pytest.fixture
def make_study() -> Callable[..., StudyRecord]:
    def make(trials: list[TrialRecord], **kw) -> StudyRecord:
        objectives = kw.pop("objectives", ["identity.hit_rate"])
        record = StudyRecord(
            name=kw.pop("name", "hand-built"),
            directions=kw.pop("directions", ["maximize"] * len(objectives)),
            objectives=objectives,
            trials=trials,
            spec=kw.pop("spec", {"search": {"space": {"beta": {"float": [0.01, 1.0], "log": True}}}}),
            base_scores=kw.pop("base_scores", {"identity.hit_rate": 0.0}),
            base_items=kw.pop("base_items", {"identity.hit_rate": _items(0)}),
        )
        for key, value in kw.items():
            setattr(record, key, value)
        return record

    return make


@pytest.fixture
def hostile() -> str:
    return HOSTILE


@pytest.fixture
def hostile_study(make_trial, make_study) -> StudyRecord:
    """Markup everywhere data can reach the page: params, names, prompts, answers, reasons, the spec."""
    curve = {"loss": [(2, 0.7), (4, 0.5)], "rewards/margins": [(2, 0.1), (4, 0.4)]}
    answer = {"prompt": HOSTILE, "greedy": f"I am {HOSTILE}", "hit": True, "leak": False}
    trials = [
        make_trial(0, 0.9, params={"beta": 0.1, "loss_type": HOSTILE}, curves=curve, generations=[answer]),
        make_trial(1, 0.4, params={"beta": 0.5, "loss_type": "ipo"}, curves=curve, generations=[answer]),
        make_trial(2, None, state="FAIL", params={"beta": 0.2, "loss_type": HOSTILE}, reason=HOSTILE),
    ]
    space = {"beta": {"float": [0.01, 1.0], "log": True}, "loss_type": {"choice": [HOSTILE, "ipo"]}}
    return make_study(
        trials,
        name=f"study {HOSTILE}",
        spec={"search": {"space": space}, "data": {"sources": {"identity": {"path": HOSTILE}}}},
        spec_text=f"study: {HOSTILE}",
        identity_names=([HOSTILE], ["Llama"]),
        base_generations=[answer],
        versions={"trl": HOSTILE},
        notes=[HOSTILE],
    )


# ---------------------------------------------------------------- Chromium


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """Headless Chromium through Playwright; skipped when missing unless HARNESS_REQUIRE_BROWSER=1 (CI)."""
    required = os.environ.get("HARNESS_REQUIRE_BROWSER") == "1"
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "the playwright Python package is not installed (pip install playwright)"
    if missing is None and not Path(CHROMIUM).is_file():
        missing = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set HARNESS_CHROMIUM)"
    if missing:
        if required:
            pytest.fail(f"HARNESS_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    with sync_playwright() as play:
        chromium = play.chromium.launch(executable_path=CHROMIUM, args=args)
        yield chromium
        chromium.close()


@dataclass
class Opened:
    """What a page did when opened: console messages, page errors and every request."""

    page: object
    console: list[str]
    errors: list[str]
    requests: list[str]


@pytest.fixture
def open_page(browser) -> Iterator[Callable[[Path], Opened]]:
    pages = []

    def open_(path: Path) -> Opened:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        pages.append(page)
        opened = Opened(page, [], [], [])
        page.on("console", lambda m: opened.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: opened.errors.append(str(e)))
        page.on("request", lambda r: opened.requests.append(r.url))
        page.goto(path.resolve().as_uri(), wait_until="load")
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length > 0 || !window.Plotly")
        return opened

    yield open_
    for page in pages:
        page.close()


@pytest.fixture
def check_page(open_page) -> Callable[..., Opened]:
    """Open a report and assert what every report must do in a real browser; screenshot it."""

    def check(path: Path, trials: int, screenshot: Path, charts: bool = True) -> Opened:
        opened = open_page(path)
        page = opened.page
        assert opened.errors == [], opened.errors
        assert [m for m in opened.console if m.startswith(("error", "warning"))] == [], opened.console
        assert opened.requests == [path.resolve().as_uri()], opened.requests  # nothing but the file itself
        assert page.evaluate("window.__pwned") is None  # no markup from data ran
        if charts:
            assert page.locator(".js-plotly-plot .main-svg").count() > 0
            assert page.locator(".js-plotly-plot .scatterlayer .trace").count() > 0
        assert page.locator("table.sortable tbody tr").count() == trials
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
        assert screenshot.stat().st_size > 10_000
        return opened

    return check


# ---------------------------------------------------------------- real sweeps (slow)


@dataclass
class SweepStore:
    """One folder whose Optuna storage and MLflow store hold every study the slow tests need."""

    root: Path
    storage: str
    tracking: str
    logs: dict[str, str]


def names_suite(root: Path) -> Path:
    """A small copy of the Athene suite whose names and one prompt hold HTML special characters."""
    suite = yaml.safe_load((ROOT / "evals" / "identity" / "athene.yaml").read_text())
    suite["new_names"] = ["<b>Athene</b> & co", "Athene"]
    suite["prompts"] = [HOSTILE + " What is your name?", *suite["prompts"][:7]]
    suite["sampling"] = {"k": 2, "temperature": 0.8}
    path = root / "names.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def sweep_specs(root: Path) -> dict[str, dict]:
    """The studies, each as small as the behaviour it exercises allows."""
    suite = str(names_suite(root))
    probes = {"probes": ["overfit", "shortcut"], "probe_suite": str(ROOT / "evals" / "probes" / "toy.yaml")}
    bench = {"benchmarks": [str(ROOT / "evals" / "bench" / "toy_facts.yaml")]}
    specs = {
        # one trial; HTML in the identity names and prompts; every family of metrics
        "solo": base_spec(study="solo", evals={"identity": suite, **bench, **probes}),
        # the same sweep on shortcut-laden data, for the two-study comparison
        "shortcut": base_spec(
            study="shortcut",
            data={"sources": {"shortcut": {"path": "toy:shortcut"}}, "size": 64, "eval_fraction": 0.1},
            evals={"identity": suite, **probes},
        ),
        # a learning rate of 1e6 diverges (NaN weights): the only trial fails
        "allfail": base_spec(study="allfail", evals={"identity": suite}),
        # with seed 11 the draws are 1e-3, 2e-8, 1e-8, 3e-8: the last two fall below the median and are pruned
        "pruned": base_spec(study="pruned", seed=11, evals={"identity": suite}),
        # two objectives: the recommendation comes from the Pareto front
        "multi": base_spec(study="multi", evals={"identity": suite, **probes}),
    }
    for spec in specs.values():
        spec["search"]["trials"] = 1
        spec["train"]["max_steps"] = 10  # the shortcut study must learn its phrase for the report to flag it
    specs["allfail"]["search"] |= {"space": {"learning_rate": {"choice": [1.0e6]}}, "max_failures": 1}
    specs["pruned"]["train"]["max_steps"] = 10
    specs["pruned"]["search"] |= {
        "trials": 4,
        "space": {"learning_rate": {"choice": [1.0e-3, 1.0e-8, 2.0e-8, 3.0e-8]}},
        # held-out loss (the default metric) separates them; accuracy barely moves on the toy data
        "pruner": {"type": "median", "every": 5, "warmup_steps": 0, "metric": "eval_loss"},
    }
    specs["multi"]["search"] |= {
        "trials": 3,
        "sampler": "nsga2",
        "space": {"beta": {"float": [0.05, 0.5], "log": True}, "learning_rate": {"float": [1e-4, 1e-3], "log": True}},
        "objectives": [
            {"metric": "identity.hit_rate", "direction": "maximize"},
            {"metric": "overfit.kl_ref", "direction": "minimize"},
        ],
    }
    return specs


@pytest.fixture(scope="session")
def sweeps(tmp_path_factory: pytest.TempPathFactory) -> SweepStore:
    """Runs every study once per test session through the real CLI (minutes)."""
    root = tmp_path_factory.mktemp("report-sweeps")
    store = SweepStore(root, f"sqlite:///{root / 'optuna.db'}", f"sqlite:///{root / 'mlflow.db'}", {})
    for name, spec in sweep_specs(root).items():
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        args = [
            sys.executable, "-m", "harness.cli", "sweep", str(path),
            "--storage", store.storage, "--tracking-uri", store.tracking,
            "--output-dir", str(root / "outputs"), "--report-dir", str(root / "cli-report" / name),
        ]  # fmt: skip
        done = subprocess.run(args, capture_output=True, text=True, timeout=1200)
        store.logs[name] = done.stdout + done.stderr
    shutil.rmtree(root / "outputs", ignore_errors=True)  # checkpoints: not needed by the report
    return store
