"""A harness trial against a bare TRL script with the same DPOConfig and data.

Runs trials of `harness sweep sweeps/beta.yaml` with `model.ref_cache: false` (so that both sides do the
same work: TRL's reference forward at every step) and after each, in a fresh process that imports only
transformers, datasets, peft and trl (no harness), trains the same model folder on the same pairs (the
trial's pairs.json) with the DPOConfig arguments the trial used, and saves the model. The sides
alternate (trial 1, bare 1, trial 2, bare 2, ...) so both see the same load on a shared machine.
Prints the ratios measured in this one run, summed over the rounds:

- training phase: the harness's time.train_s (DPOConfig built, DPOTrainer built and trained, model
  saved) / the same span of the bare script; goal <= 1.05; and the same span's CPU seconds
  (time.train_cpu_s);
- whole trial: time.total_s (setup, training, scoring, tracking) / the bare process's wall time
  (start-up and imports included): the price of everything the harness adds around training.

The harness's trials after the first take their pairs as TRL prepared them (tokenized) from the study's
cache (harness.tokcache, logged as tokcache.hits), while the bare script prepares them every time: that
saving is part of the ratio, as a user's sweep sees it.

A single trial's ratio moves by +-20% with the machine's load (same code, same work), so read the
median and the sum over several rounds, not one trial.

--model qwen2.5-0.5b trains a random-init model with Qwen2.5-0.5B's layout and vocabulary instead of the
toy (harness.toy.real_shape; bfloat16 on a GPU that has it, as `dtype: auto` picks), --lora trains
adapters instead of every weight; both sides then print tokens/s (the tokens of the pairs each step
trains on, prompt + chosen and prompt + rejected as TRL tokenizes and truncates them). The 0.5B layout is
a GPU's work; --model real-vocab (Qwen's vocabulary, tiny otherwise) checks the same path on a CPU.

    .venv/bin/python benchmarks/trl_overhead.py [--rounds 5] [--model toy|real-vocab|qwen2.5-0.5b] [--lora]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import DEFAULT_SPEC, alternate, machine, run_sweep, spec_with

from harness.toy import real_shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model", choices=["toy", *real_shape.LAYOUTS], default="toy")
    parser.add_argument("--lora", action="store_true", help="LoRA adapters (the spec's defaults), not full fine-tuning")
    parser.add_argument("--bare", type=Path, help=argparse.SUPPRESS)  # the bare TRL side, given a job file
    args = parser.parse_args()
    if args.bare:
        return bare_trl(json.loads(args.bare.read_text()))
    with tempfile.TemporaryDirectory(prefix="harness-bench-") as tmp:
        folder = Path(tmp)
        model: dict[str, Any] = {"ref_cache": False} | ({"lora": {}} if args.lora else {})
        if args.model != "toy":
            model["name"] = str(real_shape.save(folder / "model", **real_shape.LAYOUTS[args.model]))
        spec = spec_with(folder, {"model": model})
        sides = alternate(
            {
                "harness": lambda n: run_sweep(folder, spec, "--trials", str(n)).trials[n - 1],
                "bare": lambda n: run_bare(folder / "out" / "beta-sweep" / f"trial-{n - 1:03d}", folder / f"bare{n}"),
            },
            args.rounds,
        )
        tokens = [tokens_trained(folder / "out" / "beta-sweep" / f"trial-{n:03d}") for n in range(args.rounds)]
    ours, theirs = sides["harness"], sides["bare"]
    what = f"{args.model}{' LoRA' if args.lora else ''}"
    print(f"\n{args.rounds} trials of {DEFAULT_SPEC.name} ({what}), alternating with bare TRL; machine: {machine()}")
    print(f"{'summed over trials':<24}{'harness':>10}{'bare TRL':>10}{'ratio':>8}")
    for label, key, bare_key, goal in (
        ("training phase s", "time.train_s", "train_s", "   (goal <= 1.05)"),
        ("training CPU s", "time.train_cpu_s", "train_cpu_s", ""),
        ("whole trial s", "time.total_s", "wall_s", ""),
    ):
        a, b = sum(t[key] for t in ours), sum(t[bare_key] for t in theirs)
        print(f"{label:<24}{a:10.1f}{b:10.1f}{a / b:8.2f}{goal}")
    ratios = [t["time.train_s"] / b["train_s"] for t, b in zip(ours, theirs, strict=True)]
    each = ", ".join(f"{r:.2f}" for r in ratios)
    print(f"training phase ratio per trial: {each}; median {statistics.median(ratios):.2f}")
    outside = 1 - sum(t["time.train_s"] for t in ours) / sum(t["time.total_s"] for t in ours)
    setup, scoring = (sum(t[k] for t in ours) for k in ("time.setup_s", "time.eval_s"))
    print(f"harness trials: setup {setup:.1f} s, scoring {scoring:.1f} s; share outside training {outside:.0%}")
    if args.model != "toy":
        rates = [sum(tokens) / sum(t[k] for t in side) for side, k in ((ours, "time.train_s"), (theirs, "train_s"))]
        print(f"training tokens/s: harness {rates[0]:,.0f}, bare TRL {rates[1]:,.0f} ({sum(tokens):,} tokens)")


def tokens_trained(trial_dir: Path) -> int:
    """Tokens in the batches a trial trained on, about: max_steps x batch x accumulation pairs, cycling through
    its training pairs in order (TRL shuffles them, so a partial last pass may hold other pairs), each pair
    prompt + chosen and prompt + rejected. Both sides get the same count, so their tokens/s compare exactly."""
    import yaml
    from transformers import AutoTokenizer

    from harness.scoring import lm

    config = yaml.safe_load((trial_dir / "trial_config.yaml").read_text())
    pairs = json.loads((trial_dir / "pairs.json").read_text())["train"]
    tokenizer, cut = AutoTokenizer.from_pretrained(config["model"]["path"]), lm.truncation(config["train"])
    sizes = [len(c.ids) + len(r.ids) for c, r in filter(None, (lm.encode_pair(tokenizer, p, cut) for p in pairs))]
    train = config["train"]
    seen = train["max_steps"] * train["per_device_train_batch_size"] * train.get("gradient_accumulation_steps", 1)
    return sum(sizes[i % len(sizes)] for i in range(seen))


def run_bare(trial_dir: Path, output_dir: Path) -> dict[str, float]:
    """The bare TRL script on one trial's model, pairs and DPOConfig, in a process of its own."""
    job = output_dir.with_suffix(".json")
    job.write_text(json.dumps(bare_job(trial_dir, output_dir)))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--bare", str(job)], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1]) | {"wall_s": time.perf_counter() - started}


def bare_job(trial_dir: Path, output_dir: Path) -> dict[str, Any]:
    """The bare script's inputs, from what the trial saved: its model folder, pairs and DPOConfig arguments
    (built as the trial built them: harness defaults, the trial's resolved `train`, its eval cadence)."""
    import yaml

    from harness import models, refcache, training

    config = yaml.safe_load((trial_dir / "trial_config.yaml").read_text())
    pairs = json.loads((trial_dir / "pairs.json").read_text())
    train, lora = config["train"], config["model"]["lora"]
    every = training.eval_steps(train, pairs["train"], pairs["heldout"])
    precision = models.precision(config["model"]["dtype"], lora=lora is not None)
    precompute = refcache.enabled(config["model"].get("ref_cache", True), train)
    settings = training.dpo_settings(
        train, output_dir, config["seed"], every, precision.mixed, bool(pairs["heldout"]), precompute_ref=precompute
    )
    job = {"model": config["model"]["path"], "weights": precision.weights, "seed": config["seed"]}
    return job | {"settings": settings, "lora": lora} | pairs


def bare_trl(job: dict[str, Any]) -> None:
    """Plain TRL, as its documentation trains DPO: load, DPOConfig, DPOTrainer, train, save."""
    import torch
    import transformers
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    transformers.set_seed(job["seed"])
    model = AutoModelForCausalLM.from_pretrained(job["model"], dtype=getattr(torch, job["weights"]))
    tokenizer = AutoTokenizer.from_pretrained(job["model"])
    started, cpu = time.perf_counter(), time.process_time()
    config = DPOConfig(**job["settings"])
    lora = job["lora"]
    peft = None
    if lora:
        peft = LoraConfig(
            r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
            target_modules=lora["target_modules"], task_type="CAUSAL_LM",
        )  # fmt: skip
    trainer = DPOTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(job["train"]),
        eval_dataset=Dataset.from_list(job["heldout"]) if config.eval_strategy != "no" else None,
        processing_class=tokenizer,
        peft_config=peft,
    )
    trainer.train()
    trainer.save_model(config.output_dir)
    tokenizer.save_pretrained(config.output_dir)
    print(json.dumps({"train_s": time.perf_counter() - started, "train_cpu_s": time.process_time() - cpu}))


if __name__ == "__main__":
    main()
