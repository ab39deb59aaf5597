"""The spec's evals section: benchmark entries with item limits, and probes that need held-out pairs."""

from __future__ import annotations

import pytest
from support import ROOT, base_spec
from test_spec import problems

from harness.spec import EvalsSpec, SweepSpec, load_spec

FACTS = str(ROOT / "evals/bench/toy_facts.yaml")


def evals_spec(**evals) -> dict:
    spec = base_spec()
    spec["evals"] |= evals
    return spec


def test_benchmarks_take_names_paths_or_mappings_with_a_limit(write_spec) -> None:
    spec = load_spec(
        write_spec(evals_spec(benchmarks=[FACTS, {"task": FACTS, "limit": 20}, {"task": "hellaswag", "limit": None}]))
    )
    assert spec.evals.bench_limit == 200
    assert spec.evals.benchmark_entries() == [(FACTS, 200), (FACTS, 20), ("hellaswag", None)]


def test_bench_limit_is_the_default_of_every_entry_without_one(write_spec) -> None:
    spec = load_spec(write_spec(evals_spec(benchmarks=[FACTS, {"task": FACTS}], bench_limit=None)))
    assert spec.evals.benchmark_entries() == [(FACTS, None), (FACTS, None)]
    spec = load_spec(write_spec(evals_spec(benchmarks=[{"task": FACTS}], bench_limit=50), name="b.yaml"))
    assert spec.evals.benchmark_entries() == [(FACTS, 50)]


def test_limits_survive_the_trip_through_a_trial_process(write_spec) -> None:
    """A trial re-reads the dumped spec: an entry without `limit` must not turn into `limit: null` (all)."""
    spec = load_spec(write_spec(evals_spec(benchmarks=[{"task": FACTS}, {"task": FACTS, "limit": None}])))
    again = SweepSpec.model_validate(spec.model_dump(mode="json", by_alias=True))
    assert again.evals.benchmark_entries() == spec.evals.benchmark_entries() == [(FACTS, 200), (FACTS, None)]
    assert again.spec_hash() == spec.spec_hash()


@pytest.mark.parametrize(
    ("entry", "key", "fragment"),
    [
        ({"task": FACTS, "limit": 0}, "evals.benchmarks.0.limit", "greater than 0"),
        ({"task": FACTS, "limt": 5}, "evals.benchmarks.0.limt", "Did you mean 'limit'"),
        ({"limit": 5}, "evals.benchmarks.0.task", "required"),
        ({"task": "missing.yaml", "limit": 5}, "evals.benchmarks.0.task", "no such file"),
        (7, "evals.benchmarks.0", "expected a task YAML or lm-eval task name, or {task: ..., limit: N}"),
    ],
)
def test_bad_benchmark_entries_name_their_key(write_spec, entry, key: str, fragment: str) -> None:
    found = problems(write_spec(evals_spec(benchmarks=[entry])))
    assert key in found, found
    assert fragment in found[key]


def test_bench_limit_must_be_positive(write_spec) -> None:
    found = problems(write_spec(evals_spec(benchmarks=[FACTS], bench_limit=0)))
    assert "greater than 0" in found["evals.bench_limit"]


def test_overfit_probe_without_held_out_pairs_is_refused(write_spec) -> None:
    spec = evals_spec(probes=["overfit"])
    spec["data"]["eval_fraction"] = 0
    found = problems(write_spec(spec))
    message = found["data.eval_fraction"]
    assert "evals.probes" in message and "overfit" in message and "data.eval_fraction" in message


def test_shortcut_probe_needs_no_held_out_pairs(write_spec) -> None:
    spec = evals_spec(probes=["shortcut"])
    spec["data"]["eval_fraction"] = 0
    assert load_spec(write_spec(spec)).evals.probes == ["shortcut"]


def test_evals_section_alone_validates_for_harness_eval() -> None:
    evals = EvalsSpec.model_validate({"benchmarks": [{"task": "x.yaml", "limit": 3}], "bench_limit": None})
    assert evals.benchmark_entries() == [("x.yaml", 3)]


def test_a_spec_outside_the_repo_finds_the_bundled_suites(write_spec, tmp_path, monkeypatch) -> None:
    """The default probe suite and `evals/...` paths name the harness's own files, from any folder."""
    from harness.scoring import check_evals

    monkeypatch.chdir(tmp_path)
    spec = evals_spec(identity="evals/identity/athene.yaml", probes=["overfit", "shortcut"])
    path = write_spec(spec)
    loaded = load_spec(path)  # before: "evals.probe_suite: no such file: evals/probes/toy.yaml"
    assert loaded.evals.probe_suite == "evals/probes/toy.yaml"
    check_evals(loaded.evals, path.parent)  # as a trial resolves them


def test_scores_are_the_scorecards_families_not_a_trials_costs_and_counts() -> None:
    from harness.metrics import is_score

    assert all(is_score(m) for m in ("identity.hit_rate", "bench.toy_facts.acc", "overfit.kl_ref", "shortcut.swap_acc"))
    costs = ("time.total_s", "data.identity.pairs", "refcache.hits", "refcache.scoring_misses", "eval_loss", "bench")
    assert not any(is_score(m) for m in costs)
