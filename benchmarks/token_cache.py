"""What preparing a trial's pairs costs (TRL's chat template and tokenization), and what the study's token cache saves.

On the real-vocabulary model (Qwen's 151,936 tokens and ChatML template, tiny otherwise), N HH-shaped pairs
(benchmarks/data_scale.py's generator): TRL's own `_prepare_dataset`, then the harness's with an empty cache
(the study's first trial: TRL's work plus storing it), and with the cache holding the pairs (every later trial
drawing them), alternating for a few rounds; ratios in one run, since this machine is shared and noisy.

    .venv/bin/python benchmarks/token_cache.py [--pairs 2000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _common import machine
from data_scale import hh_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from datasets import Dataset
    from trl import DPOTrainer

    from harness import data, models, tokcache, training
    from harness.spec import SourceSpec
    from harness.toy import real_shape

    with tempfile.TemporaryDirectory(prefix="harness-bench-") as tmp:
        folder = Path(tmp)
        hh_file(folder / "hh.jsonl", args.pairs)
        rows = data.load_source("hh", SourceSpec(path=str(folder / "hh.jsonl"))).train
        model, tokenizer = models.load(str(real_shape.save(folder / "model")))
        config = training.dpo_config({"max_steps": 1}, folder / "out", 0, has_eval=False)
        trainer = training.dpo_trainer(model, tokenizer, rows[:1], config)
        settings = training.resolved_train_settings(config, list(tokcache.SETTINGS))
        times: dict[str, list[float]] = {"TRL": [], "cache, empty": [], "cache, full": []}
        for n in range(args.rounds):
            for name in times:
                cache = None
                if name != "TRL":
                    cache = tokcache.open_for(folder / f"study-{n}", tokenizer, settings)
                trainer.token_cache = cache
                method = DPOTrainer._prepare_dataset if cache is None else type(trainer)._prepare_dataset
                started = time.perf_counter()
                method(trainer, Dataset.from_list(rows), tokenizer, config, "train")
                times[name].append(time.perf_counter() - started)
    trl = statistics.median(times["TRL"])
    print(f"\npreparing {len(rows):,} HH-shaped pairs (real vocabulary, ChatML), median of {args.rounds}:")
    for name, seconds in times.items():
        median = statistics.median(seconds)
        print(f"  {name:13} {median:6.2f} s  ({median / trl:.2f} of TRL's; {1000 * median / len(rows):.2f} ms a pair)")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
