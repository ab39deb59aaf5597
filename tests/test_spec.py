"""Spec validation: every shipped spec is valid; every bad spec is reported at once, with key paths."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import ROOT, base_spec

from harness.spec import DataSpec, SpecError, load_spec

SHIPPED = sorted((ROOT / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_specs_validate(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    spec = load_spec(path)
    assert spec.search.trials >= 1
    assert "How to run" in path.read_text() or "Run it" in path.read_text(), "header must say how to run it"


def test_base_spec_is_valid(write_spec) -> None:
    spec = load_spec(write_spec(base_spec()))
    assert spec.data.weights() == pytest.approx({"identity": 0.7, "general": 0.3})
    assert spec.search.space["beta"].log


def problems(path: Path) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        load_spec(path)
    found: dict[str, str] = {}
    for key, _, msg in info.value.problems:
        found[key] = f"{found[key]} | {msg}" if key in found else msg
    return found


BAD_CASES = {
    "unknown top-level key": ({"studdy": "x"}, "studdy", "unknown key 'studdy'"),
    "unknown model key": ({"model": {"name": "toy", "lorra": {}}}, "model.lorra", "Did you mean 'lora'"),
    "beta not positive": ({"train__beta": 0}, "train.beta", "must be > 0"),
    "train key not in DPOConfig": ({"train__betta": 0.1}, "train.betta", "not a DPOConfig field"),
    "wrong train type": ({"train__max_steps": "forty"}, "train.max_steps", "expected int"),
    "harness-owned key": ({"train__output_dir": "/tmp"}, "train.output_dir", "set by the harness"),
    "negative mix weight": ({"data__mix": {"identity": -1, "general": 1}}, "data.mix", ">= 0"),
    "all-zero mix": ({"data__mix": {"identity": 0, "general": 0}}, "data.mix", "at least one weight"),
    "unknown mix source": ({"data__mix": {"identity": 1, "web": 1}}, "data.mix.web", "unknown source 'web'"),
    "unknown sampler": ({"search__sampler": "bayes"}, "search.sampler", "'tpe'"),
    "unknown built-in source": (
        {"data__sources": {"identity": {"path": "toy:nope"}}, "data__mix": None},
        "data.sources.identity.path",
        "unknown built-in source",
    ),
    "reference cache with a moving reference": (
        {"model": {"name": "toy", "ref_cache": True}, "train__sync_ref_model": True},
        "model.ref_cache",
        "train.sync_ref_model updates the reference",
    ),
    "a batch of nothing": ({"train__per_device_train_batch_size": 0}, "train.per_device_train_batch_size", "> 0"),
    "negative max_length": ({"train__max_length": -3}, "train.max_length", "must be > 0 (got -3)"),
    "negative weight decay": ({"train__weight_decay": -1}, "train.weight_decay", ">= 0"),
    "no steps": ({"train__max_steps": 0}, "train.max_steps", "-1: num_train_epochs decides"),
    "missing data file": (
        {"data__sources": {"identity": {"path": "nowhere.jsonl"}}, "data__mix": None},
        "data.sources.identity.path",
        "no such file",
    ),
}


@pytest.mark.parametrize("case", BAD_CASES, ids=list(BAD_CASES))
def test_bad_spec_names_key(case: str, write_spec) -> None:
    overrides, key, fragment = BAD_CASES[case]
    found = problems(write_spec(base_spec(**overrides)))
    assert key in found, found
    assert fragment in found[key]


def space_problems(space: dict, write_spec, **overrides) -> dict[str, str]:
    spec = base_spec(**overrides)
    spec["search"]["space"] = space
    return problems(write_spec(spec))


def test_bad_ranges(write_spec) -> None:
    found = space_problems(
        {
            "beta": {"float": [1.0, 0.1]},
            "learning_rate": {"float": [0, 1e-3], "log": True},
            "mix.web": {"float": [0.1, 0.9]},
            "mix.general": {"float": [-0.5, 0.5]},
            "lora.r": {"int": [4, 16]},
            "nonsense": {"float": [0, 1], "choice": [1]},
        },
        write_spec,
    )
    assert "low > high" in found["search.space.beta"]
    assert "log range needs low > 0" in found["search.space.learning_rate"]
    assert "unknown source 'web'" in found["search.space.mix.web"]
    assert "mix weights must be >= 0" in found["search.space.mix.general"]
    assert "needs model.lora" in found["search.space.lora.r"]
    assert "exactly one of" in found["search.space.nonsense"]


def test_beta_range_must_be_positive(write_spec) -> None:
    found = space_problems({"beta": {"float": [0.0, 0.5]}}, write_spec)
    assert "β must be > 0" in found["search.space.beta"]
    found = space_problems({"beta": {"choice": [0.1, -0.2]}}, write_spec)
    assert "β must be > 0" in found["search.space.beta"]


def test_searched_values_are_checked_as_train_values(write_spec) -> None:
    """What a trial would only refuse mid-sweep (or train on wrongly) is refused in the spec, searched or not: each
    choice, a range's ends, and a float range where DPOConfig counts in whole numbers."""
    space = {
        "per_device_train_batch_size": {"choice": [0, 4]},
        "gradient_accumulation_steps": {"float": [1, 4]},
        "max_length": {"int": [-5, 64]},
        "learning_rate": {"choice": ["fast", 1e-5]},
        "weight_decay": {"float": [0.0, 0.1]},
        "max_steps": {"int": [1, 10]},
    }
    found = space_problems(space, write_spec)
    assert found["search.space.per_device_train_batch_size"] == "must be > 0 (got 0)"
    assert found["search.space.gradient_accumulation_steps"].startswith("takes whole numbers: search it with int:")
    assert found["search.space.max_length"] == "must be > 0 (got -5)"
    assert found["search.space.learning_rate"] == "expected float, got 'fast'"
    assert "search.space.weight_decay" not in found and "search.space.max_steps" not in found
    found = space_problems({"max_steps": {"int": [-1, 10]}}, write_spec)
    assert found["search.space.max_steps"] == "must be > 0 (or -1: num_train_epochs decides) (got 0)"


def test_one_problem_gives_one_message(write_spec) -> None:
    found = space_problems({"beta": {"float": [0.0, 0.5], "log": True}}, write_spec)
    assert found["search.space.beta"] == "log range needs low > 0, got [0.0, 0.5]"


def test_grid_needs_choices(write_spec) -> None:
    found = space_problems({"beta": {"float": [0.1, 0.5]}}, write_spec, search__sampler="grid")
    assert "grid sampler" in found["search.space.beta"]


def test_objective_needs_an_eval(write_spec) -> None:
    spec = base_spec()
    spec["search"]["objectives"] = [{"metric": "bench.retention"}, {"metric": "identity.hit_rat"}]
    found = problems(write_spec(spec))
    assert "needs evals.benchmarks" in found["search.objectives.0.metric"]
    assert "Did you mean 'identity.hit_rate'" in found["search.objectives.1.metric"]


def test_all_errors_reported_at_once_with_lines(write_spec) -> None:
    path = write_spec(base_spec(train__beta=-1, search__sampler="bayes", data__size=0))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    lines = {key: line for key, line, _ in info.value.problems}
    text_lines = path.read_text().splitlines()
    written = {"train.beta": "  beta: -1", "search.sampler": "  sampler: bayes", "data.size": "  size: 0"}
    assert lines == {key: text_lines.index(line) + 1 for key, line in written.items()}
    text = str(info.value)
    assert f"{path}:" in text and "3 errors" in text


def test_numbers_are_numbers_where_trl_wants_numbers(write_spec) -> None:
    """PyYAML (YAML 1.1) reads `5e-4` as a string; where DPOConfig's field is a number, in `train` and in a searched
    choice, it reaches TRL as one. A string field stays a string, even one that looks like a number (a git hash);
    a single loss name is taken as DPOConfig takes it."""
    path = write_spec(base_spec())
    text = path.read_text().replace("learning_rate: 0.0005", "learning_rate: 5e-4\n  loss_type: sigmoid")
    text = text.replace("name: toy", "name: toy\n  revision: 8620e35")
    text = text.replace("beta:\n      float:", "learning_rate: {choice: [1e-4, 5e-4]}\n    beta:\n      float:")
    assert text.count("e-4") == 3 and "8620e35" in text
    path.write_text(text)
    spec = load_spec(path)
    assert spec.train["learning_rate"] == 5e-4 and isinstance(spec.train["learning_rate"], float)
    assert spec.search.space["learning_rate"].choice == [1e-4, 5e-4]
    assert spec.model.revision == "8620e35" and spec.train["loss_type"] == "sigmoid"


def test_a_spec_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_bytes(b"study: test\nseed: 0 # caf\xe9\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.problems[0][1] == 2 and "not UTF-8 text (byte 0xe9)" in str(info.value)
    with pytest.raises(SpecError, match="a folder, not a file: name one of its specs \\(spec.yaml\\)"):
        load_spec(tmp_path)


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("study: x\ndata: [\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.problems[0][1] == 3  # where the unclosed list runs into the end of the file
    assert "not valid YAML" in str(info.value)


def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "nope.yaml")


def test_spec_hash_ignores_trial_count(write_spec) -> None:
    spec = load_spec(write_spec(base_spec()))
    assert spec.with_trials(20).spec_hash() == spec.spec_hash()
    other = load_spec(write_spec(base_spec(train__beta=0.2), name="other.yaml"))
    assert other.spec_hash() != spec.spec_hash()
    uncached = load_spec(write_spec(base_spec(model__token_cache=False), name="uncached.yaml"))
    assert uncached.spec_hash() == spec.spec_hash(), "the token cache prepares the same rows TRL would"


def test_spec_hash_ignores_defaults_and_the_trial_count(write_spec) -> None:
    """Keys added to the schema later with a default must not make a running study 'a different spec'."""
    plain = load_spec(write_spec(base_spec(), "a.yaml"))
    explicit = base_spec()
    explicit["data"]["eval_size"] = DataSpec.model_fields["eval_size"].default
    explicit["search"] |= {"trials": 9, "max_failures": 3}
    assert load_spec(write_spec(explicit, "b.yaml")).spec_hash() == plain.spec_hash()
    changed = base_spec(train=base_spec()["train"] | {"beta": 0.2})
    assert load_spec(write_spec(changed, "c.yaml")).spec_hash() != plain.spec_hash()


def test_a_searched_source_trains_each_trial_on_one_source(write_spec) -> None:
    from harness.trial import resolve_config

    spec = base_spec()
    spec["search"]["space"] = {"data.source": {"choice": ["identity", "general"]}}
    loaded = load_spec(write_spec(spec))
    config = resolve_config(loaded, {"data.source": "general"})
    assert config["data"]["shares"] == {"identity": 0.0, "general": 1.0}
    assert "data.source" not in config["train"]
    spec["search"]["space"] = {"data.source": {"choice": ["identity", "nope"]}, "mix.identity": {"float": [0, 1]}}
    with pytest.raises(SpecError) as exc:
        load_spec(write_spec(spec))
    assert "unknown source 'nope'" in str(exc.value) and "cannot be searched with mix.<source>" in str(exc.value)


def test_replicates_are_checked(write_spec) -> None:
    spec = base_spec()
    spec["search"]["replicates"] = {"top_k": 0, "seed": 3}
    with pytest.raises(SpecError) as exc:
        load_spec(write_spec(spec))
    assert "search.replicates.top_k" in str(exc.value) and "Did you mean 'seeds'?" in str(exc.value)
