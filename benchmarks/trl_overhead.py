"""A harness trial against a bare TRL script with the same DPOConfig and data.

Runs one trial of `harness sweep sweeps/beta.yaml --trials 1`, then, in a fresh process that imports
only transformers, datasets, peft and trl (no harness), trains the same model folder on the same
pairs (the trial's pairs.json) with the DPOConfig arguments the trial used, and saves the model.
Prints the ratios measured in this one run:

- training phase: the harness's time.train_s (DPOConfig built, DPOTrainer built and trained, model
  saved) / the same span of the bare script; goal <= 1.05; and the same span's CPU seconds
  (time.train_cpu_s), which a shared machine's load moves less than wall time;
- whole trial: time.total_s (setup, training, scoring, tracking) / the bare process's wall time
  (start-up and imports included): the price of everything the harness adds around training.

    .venv/bin/python benchmarks/trl_overhead.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import DEFAULT_SPEC, children_cpu_s, machine, run_sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bare", type=Path, help=argparse.SUPPRESS)  # the bare TRL side, given a job file
    args = parser.parse_args()
    if args.bare:
        return bare_trl(json.loads(args.bare.read_text()))
    with tempfile.TemporaryDirectory(prefix="harness-bench-") as tmp:
        folder = Path(tmp)
        sweep = run_sweep(folder, DEFAULT_SPEC, "--trials", "1")
        job = folder / "job.json"
        job.write_text(json.dumps(bare_job(folder / "out" / sweep.study / "trial-000", folder / "bare")))
        command = [sys.executable, __file__, "--bare", str(job)]
        started, cpu = time.perf_counter(), children_cpu_s()
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        bare_wall, bare_cpu = time.perf_counter() - started, children_cpu_s() - cpu
    bare = json.loads(done.stdout.strip().splitlines()[-1])
    trial = sweep.trials[0]
    print(f"\none trial of {DEFAULT_SPEC.name}; machine: {machine()}")
    print(f"{'':18}{'harness':>10}{'bare TRL':>10}{'ratio':>8}")
    for label, ours, theirs, goal in (
        ("training phase s", trial["time.train_s"], bare["train_s"], "   (goal <= 1.05)"),
        ("training CPU s", trial["time.train_cpu_s"], bare["train_cpu_s"], "   (CPU time of the process)"),
        ("whole trial s", trial["time.total_s"], bare_wall, ""),
    ):
        print(f"{label:<18}{ours:10.1f}{theirs:10.1f}{ours / theirs:8.2f}{goal}")
    outside = 1 - trial["time.train_s"] / trial["time.total_s"]
    print(f"CPU s: harness sweep (orchestrator, base-model scoring, trial) {sweep.cpu_s:.1f}, bare {bare_cpu:.1f}")
    print(f"harness trial: setup {trial['time.setup_s']:.1f} s, scoring {trial['time.eval_s']:.1f} s; ", end="")
    print(f"share of the trial outside training {outside:.0%}")


def bare_job(trial_dir: Path, output_dir: Path) -> dict[str, Any]:
    """The bare script's inputs, from what the trial saved: its model folder, pairs and DPOConfig arguments
    (built as the trial built them: harness defaults, the trial's resolved `train`, its eval cadence)."""
    import yaml

    from harness import models, refcache, training

    config = yaml.safe_load((trial_dir / "trial_config.yaml").read_text())
    pairs = json.loads((trial_dir / "pairs.json").read_text())
    train, lora = config["train"], config["model"]["lora"]
    every = training.eval_steps(train, pairs["train"], pairs["heldout"])
    mixed = models.precision(config["model"]["dtype"], lora=lora is not None).mixed
    precompute = refcache.enabled(config["model"].get("ref_cache", True), train)
    settings = training.dpo_settings(
        train, output_dir, config["seed"], every, mixed, bool(pairs["heldout"]), precompute_ref=precompute
    )
    return {"model": config["model"]["path"], "seed": config["seed"], "settings": settings, "lora": lora} | pairs


def bare_trl(job: dict[str, Any]) -> None:
    """Plain TRL, as its documentation trains DPO: load, DPOConfig, DPOTrainer, train, save."""
    import torch
    import transformers
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    transformers.set_seed(job["seed"])
    model = AutoModelForCausalLM.from_pretrained(job["model"], dtype=torch.float32)
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
