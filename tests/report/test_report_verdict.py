"""The verdict's rules on hand-built studies: picking, noise intervals and warnings (fast, no sweep)."""

from __future__ import annotations

import pytest

from harness.report import verdict
from harness.report.data import FAIL, PRUNED
from harness.report.stats import paired_difference

CLEAN = {  # a scorecard no probe complains about
    "shortcut.swap_acc": 0.6,
    "overfit.chosen_logp_delta": 0.5,
    "overfit.both_down_rate": 0.1,
    "overfit.kl_ref": 0.1,
    "bench.retention": 1.0,
    "overfit.acc_gap": 0.05,
    "identity.leak_rate": 0.0,
}


def keys(scores: dict) -> list[str]:
    return [f.key for f in verdict.flags({**CLEAN, **scores})]


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        ({}, []),
        ({"shortcut.swap_acc": 0.2}, ["shortcut"]),
        ({"shortcut.swap_acc": verdict.SWAP_ACC_SHORTCUT}, []),  # the threshold itself is not a warning
        ({"overfit.chosen_logp_delta": -0.3, "overfit.both_down_rate": 0.8}, ["displacement"]),
        ({"overfit.chosen_logp_delta": -0.3, "overfit.both_down_rate": 0.2}, []),  # chosen fell, rarely both
        ({"overfit.chosen_logp_delta": 0.3, "overfit.both_down_rate": 0.8}, []),  # chosen rose
        ({"overfit.kl_ref": verdict.KL_REF_BLOWUP * 3}, ["kl"]),
        ({"bench.retention": 0.9}, ["retention"]),
        ({"overfit.acc_gap": 0.4}, ["overfit"]),
        ({"identity.leak_rate": 0.5}, ["leak"]),
        ({"shortcut.swap_acc": 0.1, "bench.retention": 0.5}, ["shortcut", "retention"]),
    ],
)
def test_flags_follow_the_thresholds(scores: dict, expected: list[str]) -> None:
    assert keys(scores) == expected


def test_flags_ignore_missing_metrics() -> None:
    assert verdict.flags({}) == []
    assert verdict.flags({"overfit.chosen_logp_delta": -1.0}) == []  # both_down_rate unknown: no claim


def test_flags_speak_plainly() -> None:
    (flag,) = verdict.flags({"shortcut.swap_acc": 0.1})
    assert flag.title == "Shortcut learned" and "0.10" in flag.detail and "phrase" in flag.detail


def test_single_objective_picks_the_best_and_breaks_ties_by_warnings(make_trial, make_study) -> None:
    trials = [
        make_trial(0, 0.5),
        make_trial(1, 0.9, scores={"bench.retention": 0.5}),  # tied on the objective, but warned about
        make_trial(2, 0.9),
        make_trial(3, None, state=FAIL),
    ]
    pick = verdict.pick(make_study(trials))
    assert [t.number for t in pick.ranking] == [2, 1, 0]
    assert (pick.recommended.number, pick.runner_up.number, pick.worst.number) == (2, 1, 0)
    assert "2 trials tie" in pick.how and "fewest probe warnings" in pick.how


def test_minimize_direction(make_trial, make_study) -> None:
    trials = [make_trial(0, 0.5), make_trial(1, 0.2), make_trial(2, 0.9)]
    study = make_study(trials, objectives=["overfit.kl_ref"], directions=["minimize"])
    assert verdict.pick(study).recommended.number == 1


def test_pareto_front_and_closest_to_ideal(make_trial, make_study) -> None:
    # maximize hit rate, minimize KL: 0 and 3 are extreme, 1 balanced, 2 dominated by 1
    trials = [
        make_trial(0, [1.0, 2.0]),
        make_trial(1, [0.9, 0.3]),
        make_trial(2, [0.8, 0.5]),
        make_trial(3, [0.2, 0.1]),
    ]
    study = make_study(trials, objectives=["identity.hit_rate", "overfit.kl_ref"], directions=["maximize", "minimize"])
    front = verdict.pareto_front(trials, study.directions)
    assert sorted(t.number for t in front) == [0, 1, 3]
    pick = verdict.pick(study)
    assert pick.recommended.number == 1
    assert {t.number for t in pick.pareto} == {0, 1, 3}
    assert pick.ranking[-1].number == 2  # the dominated trial ranks last
    assert "Pareto front" in pick.how and "ideal point" in pick.how


def test_difference_beyond_noise(make_trial, make_study) -> None:
    best, runner = make_trial(0, 0.95), make_trial(1, 0.3)
    result = verdict.assess(make_study([best, runner]), verdict.pick(make_study([best, runner])))
    row = result.rows[0]
    assert row.vs_base.significant and row.vs_runner_up.significant
    assert row.vs_runner_up.low > 0
    assert result.status == "good" and result.headline == "Use trial 0"
    assert any("beyond evaluation noise" in line and "runner-up trial 1" in line for line in result.trust)


def test_difference_within_noise(make_trial, make_study) -> None:
    study = make_study([make_trial(0, 0.9), make_trial(1, 0.875)])
    result = verdict.assess(study, verdict.pick(study))
    row = result.rows[0]
    assert not row.vs_runner_up.significant
    assert row.vs_runner_up.low <= 0 <= row.vs_runner_up.high
    assert any("within evaluation noise" in line for line in result.trust)


def test_not_better_than_base_is_bad(make_trial, make_study) -> None:
    study = make_study([make_trial(0, 0.025)], base_scores={"identity.hit_rate": 0.0})
    result = verdict.assess(study, verdict.pick(study))
    assert result.status == "bad" and result.headline == "Keep the base model (best trial: 0)"
    assert result.study_flags[0].key == "no-gain"


def test_warnings_make_the_verdict_amber(make_trial, make_study) -> None:
    study = make_study([make_trial(0, 0.9, scores={"shortcut.swap_acc": 0.1})])
    result = verdict.assess(study, verdict.pick(study))
    assert result.status == "warn" and [f.key for f in result.flags] == ["shortcut"]
    assert "one" in [f.key for f in result.study_flags]  # a single complete trial is said too


def test_no_items_no_interval(make_trial, make_study) -> None:
    trials = [make_trial(0, 0.9, items={}), make_trial(1, 0.8, items={})]
    study = make_study(trials)
    result = verdict.assess(study, verdict.pick(study))
    assert result.rows[0].vs_base is None and result.rows[0].vs_runner_up is None
    assert any("cannot be told" in line for line in result.trust)


def test_all_failed(make_trial, make_study) -> None:
    study = make_study([make_trial(0, None, state=FAIL, reason="loss is NaN"), make_trial(1, None, state=PRUNED)])
    result = verdict.assess(study, verdict.pick(study))
    assert result.pick.recommended is None and result.status == "bad"
    assert result.headline.startswith("No recommendation")
    (failed,) = [f for f in result.study_flags if f.key == "failed"]
    assert "loss is NaN" in failed.detail


def test_a_flat_objective_is_said(make_trial, make_study) -> None:
    study = make_study([make_trial(0, 1.0), make_trial(1, 1.0), make_trial(2, 1.0)])
    result = verdict.assess(study, verdict.pick(study))
    assert "flat" in [f.key for f in result.study_flags]


def test_bench_items_hold_the_headline_metric(make_trial) -> None:
    scores = {"bench.toy_facts.acc": 0.9, "bench.toy_facts.acc_norm": 0.8}
    items = {"bench.toy_facts": [1.0, 0.0]}
    assert verdict.item_key("bench.toy_facts.acc", scores, items) == "bench.toy_facts"
    assert verdict.item_key("bench.toy_facts.acc_norm", scores, items) is None
    assert verdict.item_key("overfit.kl_ref", scores, items) is None


def test_paired_bootstrap_is_seeded_and_paired() -> None:
    a, b = [1.0, 1.0, 0.0, 1.0] * 10, [0.0, 1.0, 0.0, 0.0] * 10
    first, second = paired_difference(a, b), paired_difference(a, b)
    assert first == second
    assert first.delta == pytest.approx(0.5) and first.significant
    assert paired_difference(a, b[:-1]) is None and paired_difference([], []) is None
    same = paired_difference(a, a)
    assert (same.low, same.high) == (0.0, 0.0) and not same.significant


def test_pick_prefers_trials_that_meet_the_constraints(make_trial, make_study) -> None:
    rule = "bench.retention >= 0.9"
    trials = [
        make_trial(0, 1.0, constraints={rule: 0.2}),  # best objective, but breaks the constraint
        make_trial(1, 0.8, constraints={rule: -0.05}),
        make_trial(2, 0.6, constraints={rule: -0.1}),
    ]
    chosen = verdict.pick(make_study(trials))
    assert [t.number for t in chosen.ranking] == [1, 2, 0]
    assert "meet the constraints" in chosen.how


def test_no_feasible_trial_is_said_plainly(make_trial, make_study) -> None:
    rule = "bench.retention >= 0.9"
    study = make_study([make_trial(0, 1.0, constraints={rule: 0.2}), make_trial(1, 0.8, constraints={rule: 0.1})])
    chosen = verdict.pick(study)
    assert chosen.ranking[0].number == 0
    assert "infeasible" in [f.key for f in verdict.assess(study, chosen).study_flags]


# ---------------------------------------------------------------- seed replicates


def replicated_study(make_trial, make_study, seeds: dict[int, list[float]]):
    """Search trials 0, 1, ... with the first value of each list; the rest are their seed replicates."""
    trials, number = [], len(seeds)
    for origin, values in seeds.items():
        trials.append(make_trial(origin, values[0]))
        for seed, value in enumerate(values[1:], start=1):
            trials.append(make_trial(number, value, replicate_of=origin, seed=seed))
            number += 1
    return make_study(trials)


def test_item_only_intervals_say_so(make_trial, make_study) -> None:
    study = make_study([make_trial(0, 0.9), make_trial(1, 0.5)])
    result = verdict.assess(study, verdict.pick(study))
    assert result.trust and all("evaluation noise only" in line for line in result.trust)


def test_a_lucky_winner_within_seed_noise_is_called_so(make_trial, make_study) -> None:
    # trial 0 had the best single run, but over three seeds trial 1's configuration is better on average
    study = replicated_study(make_trial, make_study, {0: [0.9, 0.6, 0.8], 1: [0.85, 0.85, 0.8]})
    chosen = verdict.pick(study)
    assert [t.number for t in chosen.ranking] == [1, 0]  # replicates are no candidates of their own
    assert [t.number for t in chosen.seed_runs(chosen.recommended)] == [1, 4, 5]
    assert {t.number for t in chosen.shown()} == {0, 1, 2, 3, 4, 5}
    assert "mean identity.hit_rate over seeds" in chosen.how
    result = verdict.assess(study, chosen)
    row = result.rows[0]
    assert row.seeds_vs_runner_up.seeds == (3, 3) and not row.seeds_vs_runner_up.significant
    assert any(line.startswith("The winner is within seed noise") for line in result.trust)
    assert ("identity.hit_rate: winner within seed noise of the runner-up", "warn") in result.badges
    assert not any("evaluation noise only" in line for line in result.trust)


def test_a_winner_beyond_seed_noise(make_trial, make_study) -> None:
    study = replicated_study(make_trial, make_study, {0: [0.9, 0.95, 0.9], 1: [0.5, 0.45, 0.5]})
    result = verdict.assess(study, verdict.pick(study))
    row = result.rows[0]
    assert row.seeds_vs_base.seeds == (3, 1) and row.seeds_vs_base.significant
    assert row.seeds_vs_runner_up.low > 0
    assert row.seeds_vs_base.spread == pytest.approx([0.9, 0.95, 0.9])
    assert any("beyond seed noise" in line and "runner-up trial 1 (beta = 0.2)" in line for line in result.trust)
    assert result.headline == "Use trial 0"


def test_a_runner_up_without_replicates_is_named(make_trial, make_study) -> None:
    study = replicated_study(make_trial, make_study, {0: [0.9, 0.85, 0.9], 1: [0.5]})
    result = verdict.assess(study, verdict.pick(study))
    assert any("was not re-trained" in line and "top_k" in line for line in result.trust)


def test_the_page_shows_seed_intervals_and_labels_replicates(make_trial, make_study) -> None:
    from harness.report import render

    study = replicated_study(make_trial, make_study, {0: [0.9, 0.6, 0.8], 1: [0.85, 0.85, 0.8]})
    study.spec["search"]["replicates"] = {"top_k": 2, "seeds": 3}
    html = render.page([study], [verdict.assess(study, verdict.pick(study))])
    assert "The winner is within seed noise" in html and "seed 2 of trial 1" in html
    assert "the best 2 configurations × 3 training seeds each" in html
    assert "(mean over 3 seeds 0.833)" in html  # the recommendation: trial 1 at 0.85, 0.85, 0.8
