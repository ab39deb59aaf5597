"""Models: unusable model names fail fast with one message; fp16 never trains without loss scaling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support import ROOT, base_spec

from harness import models, training
from harness.models import ModelError, Precision, precision

# ---------------------------------------------------------------- precision (CUDA mocked: no GPU here)


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch):
    """gpu(bf16=...) makes this process look like it has a CUDA device with or without bfloat16."""

    def fake(bf16: bool) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)

    return fake


@pytest.mark.parametrize(
    ("dtype", "lora", "expected"),
    [
        ("auto", False, Precision("float32", "fp16")),  # not fp16 weights: fp32 master weights, scaled fp16
        ("float32", False, Precision("float32", "fp16")),
        ("auto", True, Precision("float32", "fp16")),
        ("float16", True, Precision("float16", "fp16")),  # frozen fp16 base, fp32 adapters, loss scaling
    ],
)
def test_gpu_without_bf16_trains_with_loss_scaling(gpu, dtype: str, lora: bool, expected: Precision) -> None:
    gpu(bf16=False)
    assert precision(dtype, lora) == expected


@pytest.mark.parametrize(
    ("dtype", "lora", "expected"),
    [
        ("auto", False, Precision("bfloat16", "bf16")),
        ("float32", False, Precision("float32", "bf16")),
        ("bfloat16", True, Precision("bfloat16", "bf16")),
        ("float16", True, Precision("float16", "fp16")),
    ],
)
def test_gpu_with_bf16(gpu, dtype: str, lora: bool, expected: Precision) -> None:
    gpu(bf16=True)
    assert precision(dtype, lora) == expected


def test_cpu_trains_in_float32_without_mixed_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert precision("auto", lora=False) == Precision("float32", None)
    assert precision("bfloat16", lora=True) == Precision("bfloat16", None)
    with pytest.raises(ModelError, match="on CPU set float32"):
        precision("float16", lora=True)


@pytest.mark.parametrize("bf16", [True, False])
def test_float16_full_finetuning_is_refused_saying_what_to_set(gpu, bf16: bool) -> None:
    gpu(bf16=bf16)
    with pytest.raises(ModelError, match="cannot be fully fine-tuned.*Set dtype: auto"):
        precision("float16", lora=False)


def test_bfloat16_on_a_gpu_without_it_is_refused(gpu) -> None:
    gpu(bf16=False)
    with pytest.raises(ModelError, match="does not support bfloat16; set dtype: auto"):
        precision("bfloat16", lora=False)


def test_trainer_gets_fp16_mixed_precision_on_a_gpu_without_bf16(gpu, tmp_path: Path) -> None:
    gpu(bf16=False)
    mixed = precision("auto", lora=False).mixed
    settings = training.dpo_settings({"max_steps": 10}, tmp_path, 0, None, mixed, has_eval=False)
    assert settings["fp16"] is True and settings["bf16"] is False and settings["use_cpu"] is False


def test_trainer_on_cpu_gets_neither_mixed_mode(tmp_path: Path) -> None:
    config = training.dpo_config({"max_steps": 10}, tmp_path, 0, mixed=precision("auto", lora=False).mixed)
    assert config.fp16 is False and config.bf16 is False  # TRL would turn bf16 on if the harness did not say


def test_mixed_precision_flags_come_from_model_dtype(write_spec) -> None:
    from harness.spec import SpecError, load_spec

    with pytest.raises(SpecError) as info:
        load_spec(write_spec(base_spec(train__fp16=True)))
    assert [(k, m) for k, _, m in info.value.problems] == [
        ("train.fp16", f"set by the harness: {training.HARNESS_OWNED['fp16']}")
    ]


def test_spec_refuses_float16_full_finetuning_at_its_line(write_spec) -> None:
    from harness.spec import SpecError, load_spec

    path = write_spec(base_spec(model={"name": "toy", "dtype": "float16"}))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    (key, line, message), *_ = info.value.problems
    assert key == "model.dtype" and "Set dtype: auto" in message
    assert path.read_text().splitlines()[line - 1].strip() == "dtype: float16"
    lora = load_spec(write_spec(base_spec(model={"name": "toy", "dtype": "float16", "lora": {"r": 4}})))
    assert lora.model.dtype == "float16"


# ---------------------------------------------------------------- unreachable models


def test_toy_and_a_saved_model_folder_pass(toy_model_path: Path) -> None:
    models.check("toy")
    models.check(str(toy_model_path))


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda tmp: str(tmp / "no-such-model"), "no such folder"),
        (lambda tmp: str(tmp), "holds no model (no config.json)"),
        (lambda tmp: _folder(tmp, {"config.json": "{not json"}), "is not a model config"),
        (lambda tmp: _folder(tmp, {"config.json": json.dumps({"model_type": "llama"})}), "holds no tokenizer"),
        (lambda tmp: "no-such-org/no-such-model", "not in the Hugging Face cache while offline"),
    ],
)
def test_unusable_model_names_say_what_would_be_valid(tmp_path: Path, make, fragment: str) -> None:
    name = make(tmp_path)
    with pytest.raises(ModelError) as info:
        models.check(name)
    message = str(info.value)
    assert message.startswith(f"model.name '{name}': ") and fragment in message
    assert "Valid: 'toy'" in message or "not a model config" in message


def _folder(tmp: Path, files: dict[str, str]) -> str:
    for name, text in files.items():
        (tmp / name).write_text(text)
    return str(tmp)


def test_validate_leaves_hub_models_to_the_sweep() -> None:
    models.check("no-such-org/no-such-model", reach_hub=False)  # like hub datasets: they need the network


def test_sweep_with_an_unreachable_model_exits_2_and_writes_nothing(ws, write_spec, tmp_path: Path) -> None:
    spec = base_spec(model={"name": str(tmp_path / "my-model")})
    done = ws.sweep(write_spec(spec))
    assert done.returncode == 2, done.stderr
    expected = f"error: model.name '{tmp_path / 'my-model'}': no such folder. {models.VALID_MODELS}."
    assert done.stderr.strip().splitlines() == [expected]
    assert not list(ws.root.glob("*.db")) and not (ws.root / "outputs").exists()


def test_eval_of_an_unreachable_model_exits_2(tmp_path: Path) -> None:
    command = ["eval", "no-such-org/no-such-model", "--evals", str(ROOT / "sweeps" / "beta.yaml")]
    shown = subprocess.run([sys.executable, "-m", "harness.cli", *command], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 2
    assert shown.stderr.startswith("error: MODEL 'no-such-org/no-such-model': not a local folder")
    assert len(shown.stderr.strip().splitlines()) == 1
