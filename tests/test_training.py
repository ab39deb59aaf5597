"""The TRL adapter: held-out evaluation never costs more than its share of training, and a checkpoint carries
the training time that led to it into a resumed training."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import training
from harness.training import EVAL_SHARE, eval_steps, pair_chars


def pairs(n: int, answer_chars: int = 40, prompt_chars: int = 60) -> list[dict]:
    return [{"prompt": "p" * prompt_chars, "chosen": "c" * answer_chars, "rejected": "r" * answer_chars}] * n


def eval_share(train: dict, train_rows: list[dict], eval_rows: list[dict]) -> float:
    """Forward passes of in-training evaluation over those of training, for the plan eval_steps makes."""
    every = eval_steps(train, train_rows, eval_rows)
    if every is None:
        return 0.0
    steps, batch = (
        train["max_steps"],
        train["per_device_train_batch_size"] * train.get("gradient_accumulation_steps", 1),
    )
    evals = steps // every
    mean_train = sum(map(pair_chars, train_rows)) / len(train_rows)
    return evals * 2 * sum(map(pair_chars, eval_rows)) / (steps * batch * 4 * mean_train)


def test_cheap_evaluation_keeps_four_points_per_curve() -> None:
    train = {"max_steps": 40, "per_device_train_batch_size": 8}
    assert eval_steps(train, pairs(256), pairs(16)) == 10


@pytest.mark.parametrize(
    ("train", "n_eval", "eval_answer_chars"),
    [
        ({"max_steps": 40, "per_device_train_batch_size": 8}, 128, 40),  # issue 7: two capped sources
        ({"max_steps": 40, "per_device_train_batch_size": 8}, 64, 400),  # long held-out answers
        ({"max_steps": 200, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 2}, 128, 40),
        ({"max_steps": 13, "per_device_train_batch_size": 4}, 64, 40),
    ],
)
def test_evaluation_stays_within_its_share_of_training(train: dict, n_eval: int, eval_answer_chars: int) -> None:
    eval_rows = pairs(n_eval, answer_chars=eval_answer_chars)
    assert eval_share(train, pairs(512), eval_rows) <= EVAL_SHARE


def test_expensive_held_out_set_evaluates_fewer_times_or_not_at_all() -> None:
    train = {"max_steps": 40, "per_device_train_batch_size": 8}
    assert eval_steps(train, pairs(256), pairs(128)) == 40  # once, at the end
    assert eval_steps(train, pairs(256), pairs(64, answer_chars=4000)) is None  # not even once fits


def test_epoch_based_training_counts_its_steps() -> None:
    train = {"max_steps": -1, "num_train_epochs": 2, "per_device_train_batch_size": 8}
    assert eval_steps(train, pairs(320), pairs(16)) == 20  # 80 steps, four evaluations


def test_no_held_out_pairs_means_no_evaluation(tmp_path: Path) -> None:
    assert eval_steps({"max_steps": 40}, pairs(64), []) is None
    settings = training.dpo_settings({"eval_steps": 5}, tmp_path, 0, None, None, has_eval=False)
    assert settings["eval_strategy"] == "no"


def test_the_plan_sets_trl_eval_steps(tmp_path: Path) -> None:
    config = training.dpo_config({"max_steps": 40}, tmp_path, 0, eval_every=10)
    assert config.eval_strategy == "steps" and config.eval_steps == 10


def test_a_spec_eval_cadence_wins(tmp_path: Path) -> None:
    own = training.dpo_settings({"max_steps": 40, "eval_steps": 3}, tmp_path, 0, 40, None, has_eval=True)
    assert own["eval_strategy"] == "steps" and own["eval_steps"] == 3
    off = training.dpo_settings({"eval_strategy": "no"}, tmp_path, 0, 10, None, has_eval=True)
    assert off["eval_strategy"] == "no"
    asked = training.dpo_settings({"eval_steps": 7}, tmp_path, 0, None, None, has_eval=True)  # none planned
    assert asked["eval_strategy"] == "steps" and asked["eval_steps"] == 7


def test_message_pairs_are_sized_by_their_text() -> None:
    pair = {
        "prompt": [{"role": "system", "content": "abc"}, {"role": "user", "content": "de"}],
        "chosen": [{"role": "assistant", "content": "xyz"}],
        "rejected": [{"role": "assistant", "content": ""}],
    }
    assert pair_chars(pair) == 2 * 5 + 3 + 0


def _train(
    folder: Path, model_path: Path, resume_from: Path | None = None, lora: bool = False
) -> tuple[object, list[int]]:
    """2 steps of 3 a toy epoch holds (12 pairs, batches of 4), a checkpoint after each; the trained model and
    the steps it logged a loss at."""
    from harness import models
    from harness.toy import toy_pairs

    model, tokenizer = models.load(str(model_path))
    settings = {"max_steps": 2, "per_device_train_batch_size": 4, "logging_steps": 1}
    settings |= {"save_strategy": "steps", "save_steps": 1, "save_total_limit": 2}
    config = training.dpo_config(settings, folder, 0, has_eval=False)
    logged: list[int] = []
    trained = training.train_dpo(
        model,
        tokenizer,
        toy_pairs("identity")[:12],
        [],
        config,
        training.lora_config(r=4, alpha=8, dropout=0.0, target_modules="all-linear") if lora else None,
        on_log=lambda step, logs: logged.extend([step] if "loss" in logs else []),
        resume_from=resume_from,
    )
    return trained, logged


def test_a_checkpoint_carries_its_training_time_into_the_resumed_training(tmp_path: Path, toy_model_path: Path) -> None:
    import json

    _train(tmp_path, toy_model_path)
    first = training.trained_seconds(tmp_path / "checkpoint-1")
    assert first[0] > 0 and first[1] > 0
    assert training.trained_seconds(tmp_path / "checkpoint-2")[0] > first[0]
    # as if earlier attempts had trained for an hour before checkpoint-1: the resumed training goes on from there
    state_file = tmp_path / "checkpoint-1" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["stateful_callbacks"]["TrainingClock"]["attributes"] = {"train_s": 3600.0, "train_cpu_s": 1800.0}
    state_file.write_text(json.dumps(state))
    _, logged = _train(tmp_path, toy_model_path, resume_from=tmp_path / "checkpoint-1")
    assert logged == [2]
    wall, cpu = training.trained_seconds(tmp_path / "checkpoint-2")
    assert wall > 3600 and cpu > 1800
    assert training.trained_seconds(None) is None and training.trained_seconds(tmp_path) is None


def test_a_checkpoint_of_an_older_harness_without_the_clock_resumes(tmp_path: Path, toy_model_path: Path) -> None:
    import json

    _train(tmp_path, toy_model_path)
    state_file = tmp_path / "checkpoint-1" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    del state["stateful_callbacks"]["TrainingClock"]
    state_file.write_text(json.dumps(state))
    assert training.trained_seconds(tmp_path / "checkpoint-1") is None
    _, logged = _train(tmp_path, toy_model_path, resume_from=tmp_path / "checkpoint-1")
    assert logged == [2], "it trained on and saved checkpoint-2 (the Trainer's save wanted the clock's entry)"
    assert training.trained_seconds(tmp_path / "checkpoint-2") is not None


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_resuming_from_the_last_checkpoint_trains_no_step_past_max_steps(
    tmp_path: Path, toy_model_path: Path, lora: bool
) -> None:
    """A trial stopped while scoring resumes from the checkpoint of its last step: the Trainer would take one more
    step (its stop check follows a step); the checkpoint's weights are the trained model."""
    trained, logged = _train(tmp_path, toy_model_path, lora=lora)
    assert logged == [1, 2]
    again, logged = _train(tmp_path, toy_model_path, resume_from=tmp_path / "checkpoint-2", lora=lora)
    assert logged == []
    expected = trained.state_dict()
    for name, tensor in again.state_dict().items():
        assert tensor.equal(expected[name]), name
