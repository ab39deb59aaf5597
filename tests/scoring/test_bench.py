"""Benchmarks through the real lm-eval, on a tiny random Llama: fast, offline, CPU."""

from __future__ import annotations

import json

import pytest
import torch
from support import ROOT

from harness.scoring import bench
from harness.spec import SpecError

BENCH = ROOT / "evals" / "bench"
SHIPPED = sorted(str(p) for p in BENCH.glob("*.yaml"))
TOY_BENCH = ["evals/bench/toy_facts.yaml", "evals/bench/toy_arith_gen.yaml"]  # relative to ROOT


def data_lines(name: str) -> list[str]:
    return [line for line in (BENCH / "data" / f"{name}.jsonl").read_text().splitlines() if line.strip()]


def rows(name: str) -> int:
    return len(data_lines(name))


@pytest.fixture(scope="module")
def tiny() -> tuple[torch.nn.Module, object]:
    """A 1-layer random Llama with a byte-level BPE tokenizer and the toy's ChatML template."""
    from harness.toy.build import make_model, train_tokenizer

    texts = [json.loads(line)["question"] for f in ("toy_facts", "toy_arith_gen") for line in data_lines(f)]
    tokenizer = train_tokenizer(texts, vocab_size=300)
    torch.manual_seed(0)
    size = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    model = make_model(tokenizer, {**size, "max_position_embeddings": 128}).eval()
    return model, tokenizer


@pytest.fixture(scope="module")
def scored(tiny, tmp_path_factory) -> bench.BenchScores:
    """Both toy benchmarks, scored from an unrelated working directory (data paths must not depend on it)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path_factory.mktemp("elsewhere"))
        return bench.score(*tiny, TOY_BENCH, spec_dir=ROOT)


# ------------------------------------------------------------------------------------------ check


def test_check_accepts_every_shipped_task_yaml():
    assert SHIPPED, "no task YAMLs in evals/bench"
    bench.check(SHIPPED, spec_dir=None)


def test_check_leaves_task_names_to_lm_eval():
    bench.check(["hellaswag"], spec_dir=None)


def test_check_rejects_a_missing_path(tmp_path):
    with pytest.raises(SpecError, match="nope.yaml") as err:
        bench.check(["nope.yaml"], spec_dir=tmp_path)
    assert "no such file" in str(err.value)


def test_check_rejects_unparsable_yaml(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("task: broken\ndoc_to_text: [unclosed\n")
    with pytest.raises(SpecError) as err:
        bench.check([str(broken)], spec_dir=None)
    assert err.value.source == str(broken)


def test_check_reports_every_problem_with_its_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(
        "task: bad\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        "  data_files: {test: data/missing.jsonl}\n"
        "output_type: multiple_choise\n"
        "doc_to_txt: question\n"
    )
    with pytest.raises(SpecError) as err:
        bench.check(["bad.yaml"], spec_dir=tmp_path)
    problems = {key: (line, message) for key, line, message in err.value.problems}
    assert err.value.source == str(config)
    assert problems["doc_to_txt"][0] == 6 and "doc_to_text" in problems["doc_to_txt"][1]
    assert problems["output_type"][0] == 5
    assert "data/missing.jsonl" in problems["dataset_kwargs.data_files"][1]


def test_task_config_data_files_are_read_from_the_yaml_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = bench.load_task_config(str(BENCH / "toy_facts.yaml"), spec_dir=None)
    assert config["dataset_kwargs"]["data_files"] == {"test": str(BENCH / "data" / "toy_facts.jsonl")}


def test_hub_dataset_data_files_stay_repo_paths(tmp_path):
    (tmp_path / "hub.yaml").write_text(
        "task: hub\ndataset_path: org/corpus\ndataset_kwargs: {data_files: {test: en/test.json}}\n"
        "output_type: generate_until\ntest_split: test\ndoc_to_text: q\ndoc_to_target: a\n"
    )
    config = bench.load_task_config("hub.yaml", spec_dir=tmp_path)
    assert config["dataset_kwargs"]["data_files"] == {"test": "en/test.json"}


# ------------------------------------------------------------------------------------------ score


def test_score_names_metrics_as_lm_eval_does(scored):
    metrics = scored.metrics
    expected = {"bench.toy_facts.acc", "bench.toy_facts.acc_norm", "bench.toy_arith_gen.exact_match"}
    assert expected <= set(metrics)
    assert not [k for k in metrics if "stderr" in k]
    assert all(0.0 <= v <= 1.0 for v in metrics.values())


def test_score_items_follow_the_data_files(scored):
    metrics, items = scored.metrics, scored.items
    assert {task: len(v) for task, v in items.items()} == {t: rows(t) for t in ("toy_facts", "toy_arith_gen")}
    assert set(items["toy_facts"]) <= {0.0, 1.0}
    assert sum(items["toy_facts"]) / len(items["toy_facts"]) == pytest.approx(metrics["bench.toy_facts.acc"])


def test_score_from_another_working_directory(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = bench.score(*tiny, [str(BENCH / "toy_facts.yaml")], spec_dir=None)
    assert "bench.toy_facts.acc" in result.metrics and len(result.items["toy_facts"]) == rows("toy_facts")


# get_peft_model warns under transformers 5; not this module's concern
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning")
def test_score_accepts_a_peft_model(tiny, scored):
    """A fresh adapter (lora_B starts at zero) leaves the model unchanged: it must score exactly as the base."""
    from peft import LoraConfig, get_peft_model

    model, tokenizer = tiny
    lora = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    lora.train()
    try:
        result = bench.score(lora, tokenizer, ["toy_facts.yaml"], spec_dir=BENCH)
        assert result.metrics["bench.toy_facts.acc"] == scored.metrics["bench.toy_facts.acc"]
        assert result.items["toy_facts"] == scored.items["toy_facts"]
        assert lora.training, "score must hand the model back in the mode it came in"
    finally:
        lora.unload()  # the module-scoped tiny model stays LoRA-free for other tests


def test_score_keeps_the_callers_random_state(tiny):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    bench.score(*tiny, ["toy_arith_gen.yaml"], spec_dir=BENCH, seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_score_without_benchmarks_is_empty(tiny):
    assert bench.score(*tiny, [], spec_dir=None) == bench.BenchScores()


def test_score_reports_lm_evals_directions_and_every_task(scored):
    assert scored.tasks == ["toy_facts", "toy_arith_gen"]
    assert scored.higher_is_better["toy_facts"] == {"acc": True, "acc_norm": True}
    assert scored.higher_is_better["toy_arith_gen"]["exact_match"] is True


def test_limit_per_benchmark_scores_the_first_items(tiny, scored):
    result = bench.score(*tiny, [("toy_facts.yaml", 7), ("toy_arith_gen.yaml", None)], spec_dir=BENCH)
    assert len(result.items["toy_facts"]) == 7, "lm-eval's limit: the task's first 7 documents"
    assert result.items["toy_facts"] == scored.items["toy_facts"][:7]
    assert len(result.items["toy_arith_gen"]) == rows("toy_arith_gen"), "None scores every item"
    assert result.metrics["bench.toy_facts.acc"] == pytest.approx(sum(scored.items["toy_facts"][:7]) / 7)


@pytest.fixture
def small_task_index(monkeypatch, tmp_path):
    """lm-eval's TaskManager over one hub-backed task, not its thousands of built-ins (which take seconds)."""
    import lm_eval.tasks

    (tmp_path / "hub_task.yaml").write_text(
        "task: hub_task\ndataset_path: no-such-org/no-such-dataset\noutput_type: multiple_choice\n"
        "test_split: test\ndoc_to_text: q\ndoc_to_choice: c\ndoc_to_target: a\n"
    )
    real = lm_eval.tasks.TaskManager

    def manager(include_defaults: bool) -> lm_eval.tasks.TaskManager:
        return real(include_path=str(tmp_path), include_defaults=False)

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", manager)


def test_unknown_task_name_is_reported_by_name(tiny, small_task_index):
    with pytest.raises(bench.BenchmarkError, match="Unknown benchmark 'hub_tsak'.*Did you mean 'hub_task'"):
        bench.score(*tiny, ["hub_tsak"], spec_dir=None)


def test_task_name_offline_fails_naming_the_task(tiny, small_task_index):
    with pytest.raises(bench.BenchmarkError, match="benchmark 'hub_task' could not be loaded") as err:
        bench.score(*tiny, [*TOY_BENCH, "hub_task"], spec_dir=ROOT)
    assert "task YAML with local data" in str(err.value)


# ------------------------------------------------------------------------------------- headline


def test_primary_metric_prefers_acc_then_exact_match():
    metrics = {"bench.mc.acc_norm": 0.5, "bench.mc.acc": 0.4, "bench.gen.exact_match.strict-match": 0.3}
    assert bench.primary_metric(metrics, "mc") == "bench.mc.acc"
    assert bench.primary_metric(metrics, "gen") == "bench.gen.exact_match.strict-match"
    assert bench.primary_metric(metrics, "absent") is None


UP = {"a": {"acc": True}, "b": {"exact_match": True}, "c": {"acc": True}}


def test_retention_averages_trial_over_base_per_task_and_says_what_it_left_out():
    base = {"bench.a.acc": 0.8, "bench.b.exact_match": 0.5, "bench.c.acc": 0.0}
    trial = {"bench.a.acc": 0.4, "bench.b.exact_match": 0.5, "bench.c.acc": 0.2}
    kept, notes = bench.retention(trial, base, ["a", "b", "c"], UP)
    assert kept == pytest.approx(0.75)
    assert len(notes) == 1 and "leaves out c" in notes[0] and "base 0" in notes[0]


def test_retention_follows_lm_evals_direction():
    """A perplexity that doubles keeps half the capability; one that halves is better than the base."""
    base = {"bench.ppl.word_perplexity": 10.0, "bench.a.acc": 0.5}
    worse = {"bench.ppl.word_perplexity": 20.0, "bench.a.acc": 0.5}
    better = {"bench.ppl.word_perplexity": 5.0, "bench.a.acc": 0.5}
    directions = {"ppl": {"word_perplexity": False}, "a": {"acc": True}}
    assert bench.retention(worse, base, ["ppl", "a"], directions) == (pytest.approx(0.75), [])
    assert bench.retention(better, base, ["ppl", "a"], directions) == (pytest.approx(1.5), [])


def test_retention_notes_tasks_it_cannot_compare():
    base = {"bench.a.acc": 0.5, "bench.odd.score": 0.3}
    trial = {"bench.a.acc": 0.5, "bench.odd.score": 0.2, "bench.new.acc": 0.9}
    kept, notes = bench.retention(trial, base, ["a", "odd", "new"], {"a": {"acc": True}, "odd": {"score": None}})
    assert kept == 1.0
    assert any("odd" in n and "whether higher" in n for n in notes)
    assert any("new" in n and "base model has no score" in n for n in notes)
