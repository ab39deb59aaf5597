"""The study's reference log-prob cache: an 8-trial toy sweep with the cache (the default) vs without it.

Runs `harness sweep sweeps/beta.yaml` as shipped and with `model.ref_cache: false` (TRL then holds a
reference copy and runs its forward pass at every step), one trial at a time on each side in turn (each
sweep resumed with --trials n), so both sides see the same load on a shared machine. Both draw the same
points (same seed, same sampler, same results). Prints ratios measured in this one run, cache / no
cache: the trials' summed time.total_s (the sweep's work, without the resumes' start-up), training
phase (time.train_s, and its CPU seconds time.train_cpu_s) and scoring (time.eval_s, where the probes read
the reference's log-probs from the same cache). The goal: <= 0.8.
For the default sweep's own wall time (goal: <= 300 s on a 2-core CPU), run `harness sweep sweeps/beta.yaml`.

--model real-vocab runs the same sweeps on a random-init model with Qwen2.5's 151,936-token vocabulary and
ChatML template (harness.toy.real_shape; tiny otherwise, so it runs on a CPU): there the logits over the
real vocabulary make the reference forward a real model's share of a training step; --model qwen2.5-0.5b
is the whole 0.5B layout (bf16), a GPU's work.

With --training-only it times the training phase alone, in this one process, alternating TRL computing
the reference itself with a warm cache (the default spec's batch and pairs, 20 steps, no scoring):
the part of a trial the cache can change, without the sweep's scoring and start-up around it.

With --reference-pass it times the pass that fills the cache (the study's first trial; every trial when
a user sets precompute_ref_log_probs without the cache) on HH-shaped transcripts (benchmarks/data_scale.py's
generator, with the toy pairs' words): TRL's own precompute, in the dataset's order, against the harness's,
longest pair first, alternating, with the tokens each pads its batches to. --model real-vocab (the default
here) runs on a CPU, where most of the time is the LM head over 151,936 tokens, at padded positions too;
qwen2.5-0.5b is a GPU's work.

    .venv/bin/python benchmarks/ref_cache.py [--trials 8] [--model toy|real-vocab|qwen2.5-0.5b] [--training-only]
    .venv/bin/python benchmarks/ref_cache.py --reference-pass [--model real-vocab|qwen2.5-0.5b] [--pairs 96]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import DEFAULT_SPEC, alternate, machine, run_sweep, spec_with

from harness.toy import real_shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--model", choices=["toy", *real_shape.LAYOUTS], default="toy")
    parser.add_argument("--training-only", action="store_true")
    parser.add_argument("--reference-pass", action="store_true")
    parser.add_argument("--pairs", type=int, default=96, help="HH-shaped pairs written for --reference-pass")
    args = parser.parse_args()
    if args.training_only:
        return training_phase(rounds=2)
    if args.reference_pass:
        return reference_pass("real-vocab" if args.model == "toy" else args.model, args.pairs, rounds=2)
    trials = args.trials
    with tempfile.TemporaryDirectory(prefix="harness-bench-") as tmp:
        folder = Path(tmp)
        model = {}
        if args.model != "toy":
            model["name"] = str(real_shape.save(folder / "model", **real_shape.LAYOUTS[args.model]))
        cached_spec = spec_with(folder / "cache", {"model": model})
        plain_spec = spec_with(folder / "plain", {"model": model | {"ref_cache": False}})
        sides = alternate(
            {
                "cache": lambda n: run_sweep(folder / "cache", cached_spec, "--trials", str(n)),
                "no cache": lambda n: run_sweep(folder / "plain", plain_spec, "--trials", str(n)),
            },
            trials,
        )
    cached, plain = sides["cache"][-1], sides["no cache"][-1]
    print(f"\n{trials} trials of {DEFAULT_SPEC.name} ({args.model}), alternating; machine: {machine()}")
    print(f"{'summed over trials':<24}{'cache':>10}{'no cache':>10}{'ratio':>8}")
    for key in ("time.total_s", "time.train_s", "time.train_cpu_s", "time.eval_s"):
        a, b = cached.total(key), plain.total(key)
        print(f"{key:<24}{a:10.1f}{b:10.1f}{a / b:8.2f}")
    for key in ("time.train_s", "time.train_cpu_s"):
        pairs = zip(cached.trials, plain.trials, strict=True)
        print(f"{key} per trial, cache/none: " + ", ".join(f"{a[key]:.0f}/{b[key]:.0f}" for a, b in pairs))
    if trials > 1:  # a long study's steady state: the first trial fills the cache
        later = [
            f"{key} {sum(t[key] for t in cached.trials[1:]) / sum(t[key] for t in plain.trials[1:]):.2f}"
            for key in ("time.total_s", "time.train_s", "time.train_cpu_s")
        ]
        print("trials after the first, cache / no cache: " + ", ".join(later))
    hits, misses = cached.total("refcache.hits"), cached.total("refcache.misses")
    print(f"cache: {hits:.0f} hits, {misses:.0f} misses over the sweep; time.ref_s {cached.total('time.ref_s'):.1f} s")
    hits, misses = cached.total("refcache.scoring_hits"), cached.total("refcache.scoring_misses")
    print(f"probes' reference log-probs (in time.eval_s): {hits:.0f} hits, {misses:.0f} misses")
    same = [t.get("identity.hit_rate") for t in cached.trials] == [t.get("identity.hit_rate") for t in plain.trials]
    print(f"same identity.hit_rate in every trial: {same}")
    ratio = cached.total("time.total_s") / plain.total("time.total_s")
    print(f"goal: sweep work with cache / without <= 0.8 -> {ratio:.2f}")


def training_phase(rounds: int) -> None:
    """TRL's own reference vs a warm cache, through harness.training, alternating in this process."""
    import time

    import transformers

    from harness import models, refcache, training
    from harness.toy import ensure_toy_model, toy_pairs

    path = str(ensure_toy_model(models.cache_dir(Path("outputs").resolve())))
    pairs = toy_pairs("identity")[:112] + toy_pairs("general")[:32]
    train = {"max_steps": 20, "per_device_train_batch_size": 8, "learning_rate": 5e-4, "logging_steps": 5}
    with tempfile.TemporaryDirectory(prefix="harness-bench-") as tmp:

        def run(cached: bool) -> tuple[float, float]:
            transformers.set_seed(0)
            model, tokenizer = models.load(path)
            config = training.dpo_config(train, Path(tmp) / "trainer", 0, has_eval=False, precompute_ref=cached)
            settings = training.resolved_train_settings(config, list(training.REFERENCE_SETTINGS))
            cache = refcache.open_for(Path(tmp), model, tokenizer, {"name": path}, settings) if cached else None
            wall, cpu = time.perf_counter(), time.process_time()
            training.train_dpo(model, tokenizer, pairs, [], config, ref_cache=cache)
            return time.perf_counter() - wall, time.process_time() - cpu

        run(cached=True)  # fills the cache, as the study's first trial does
        sides = alternate({"cache": lambda n: run(True), "no cache": lambda n: run(False)}, rounds)
    (cw, cc), (pw, pc) = (tuple(map(sum, zip(*sides[k], strict=True))) for k in ("cache", "no cache"))
    print(f"\ntraining phase, {len(pairs)} pairs, 20 steps, {rounds} rounds alternating; machine: {machine()}")
    print(f"warm cache / TRL's own reference: wall {cw:.1f}/{pw:.1f} s = {cw / pw:.2f}, ", end="")
    print(f"CPU {cc:.1f}/{pc:.1f} s = {cc / pc:.2f}")


def reference_pass(layout: str, pairs: int, rounds: int) -> None:
    """TRL's precompute in the dataset's order vs the harness's longest first, alternating in this process."""
    import time

    from data_scale import hh_file
    from trl import DPOTrainer

    from harness import data, models, training
    from harness.spec import SourceSpec

    with tempfile.TemporaryDirectory(prefix="harness-bench-") as tmp:
        folder = Path(tmp)
        hh_file(folder / "hh.jsonl", pairs, words=toy_words())  # words the tokenizer knows: real lengths
        rows = data.load_source("hh", SourceSpec(path=str(folder / "hh.jsonl"))).train
        precision = models.precision("auto", lora=False)
        path = real_shape.save(folder / "model", **real_shape.LAYOUTS[layout])
        model, tokenizer = models.load(str(path), None, precision.weights)
        config = training.dpo_config({"max_steps": 1}, folder / "out", 0, mixed=precision.mixed, has_eval=False)
        trainer = training.dpo_trainer(model, tokenizer, rows, config)
        prepared, collate, batch = trainer.train_dataset, trainer.data_collator, config.per_device_train_batch_size
        padded = {"TRL's order": 0, "longest first": 0}
        seconds = {name: 0.0 for name in padded}

        def run(name: str) -> None:
            def counting(examples: list[dict]) -> dict:
                collated = collate(examples)
                padded[name] += collated["input_ids"].numel()
                return collated

            trainer.data_collator = counting  # an in-memory set's TRL file cache has a random name: no hits
            started = time.perf_counter()
            if name == "TRL's order":
                DPOTrainer._precompute_ref_logps(trainer, prepared, "train", batch)
            else:
                trainer._precompute_ref_logps(prepared, "train", batch)
            seconds[name] += time.perf_counter() - started

        alternate({name: lambda n, name=name: run(name) for name in padded}, rounds)
    widths = [  # as TRL's collator cuts them
        min(len(p) + max(len(c), len(r)), config.max_length or 1 << 30)
        for p, c, r in zip(*(prepared[f"{k}_ids"] for k in KINDS), strict=True)
    ]
    print(f"\nreference pass over {len(widths)} HH-shaped pairs ({layout}, {precision.mixed or 'float32'}), pairs of")
    print(f"{min(widths)}-{max(widths)} tokens (mean {sum(widths) / len(widths):.0f}), batches of {batch}, ", end="")
    print(f"{rounds} rounds alternating; machine: {machine()}")
    (a, b), (ta, tb) = padded.values(), seconds.values()
    print(f"tokens padded to, longest first / TRL's order: {b // rounds:,} / {a // rounds:,} = {b / a:.2f}")
    print(f"wall, longest first / TRL's order: {tb:.1f} / {ta:.1f} s = {tb / ta:.2f}")
    for size in (8, 32):  # what a larger precompute_ref_batch_size would pad to, from the widths alone
        mine, theirs = (padded_tokens(order, size) for order in (sorted(widths, reverse=True), widths))
        print(f"batches of {size:2}: tokens padded to, longest first / TRL's order: {mine:,} / {theirs:,} = ", end="")
        print(f"{mine / theirs:.2f} (from the widths)")


KINDS = ("prompt", "chosen", "rejected")


def toy_words() -> list[str]:
    """The words of the toy pairs, on which the real-vocabulary tokenizer was trained (one token or two each)."""
    from harness.toy import toy_pairs

    texts = (m["content"] for source in ("identity", "general") for p in toy_pairs(source) for m in p["prompt"])
    return sorted({word.strip(".,?!") for text in texts for word in text.split()} - {""})


def padded_tokens(widths: list[int], batch: int) -> int:
    """Rows TRL's collator makes (chosen and rejected) times the width it pads each batch to, in this order."""
    return sum(2 * len(widths[i : i + batch]) * max(widths[i : i + batch]) for i in range(0, len(widths), batch))


if __name__ == "__main__":
    main()
