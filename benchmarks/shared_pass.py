"""The reference pass of a parallel study's first trials: split between them (the harness) vs each trial
computing every pair (as before it, and as TRL does).

N trial-like processes start at once (--processes, default 2: one per core here; one per device with
--devices), each building the harness's DPOTrainer over the same HH-shaped pairs with the study's reference
cache: its constructor prepares the pairs and runs the reference pass, which is what is timed. "shared":
one study cache, so the processes split the pairs (harness.refcache.Claims); "apart": a cache each, so
each computes every pair, as the first wave of a parallel study did. The processes run one torch thread
each, so N processes share N cores as N trials share N devices. Prints, per side, the slowest process's
pass (the first wave waits for it) and the pairs computed in all. The store's chunk is scaled to the set
(--chunk, default 8 pairs of 96, as 1,024 of a 12k-pair set), so that the pass has chunks to split.

    .venv/bin/python benchmarks/shared_pass.py [--processes 2] [--pairs 96] [--chunk 8] [--model real-vocab]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine

from harness.toy import real_shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=96)
    parser.add_argument("--chunk", type=int, default=8)
    parser.add_argument("--model", choices=list(real_shape.LAYOUTS), default="real-vocab")
    parser.add_argument("--one", nargs=4, metavar=("MODEL", "PAIRS", "CACHE", "CHUNK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one_pass(Path(args.one[0]), Path(args.one[1]), Path(args.one[2]), int(args.one[3]))
    from data_scale import hh_file
    from ref_cache import toy_words

    with tempfile.TemporaryDirectory(prefix="harness-bench-") as tmp:
        folder = Path(tmp)
        hh_file(folder / "hh.jsonl", args.pairs, words=toy_words())
        model = real_shape.save(folder / "model", **real_shape.LAYOUTS[args.model])
        sides = {}
        for side in ("apart", "shared"):
            caches = [folder / side / (str(n) if side == "apart" else "study") for n in range(args.processes)]
            sides[side] = wave(model, folder / "hh.jsonl", caches, args.chunk)
    print(f"\nreference pass of {args.processes} trials started at once over the same {args.pairs} HH-shaped pairs")
    print(f"({args.model}, one torch thread each, chunks of {args.chunk}); machine: {machine()}")
    for side, runs in sides.items():
        slowest, each = max(r["seconds"] for r in runs), ", ".join(f"{r['seconds']:.1f}" for r in runs)
        computed = sum(r["computed"] for r in runs)
        print(f"{side:>7}: slowest pass {slowest:.1f} s (each: {each}), pairs computed {computed}")
    ratio = max(r["seconds"] for r in sides["shared"]) / max(r["seconds"] for r in sides["apart"])
    print(f"first wave's reference pass, shared / apart: {ratio:.2f} (1/{args.processes} = {1 / args.processes:.2f})")


def wave(model: Path, pairs: Path, caches: list[Path], chunk: int) -> list[dict]:
    """The processes at once; each prints its pass's seconds and the pairs it computed."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--one", str(model), str(pairs), str(cache), str(chunk)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        for cache in caches
    ]
    return [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]


def one_pass(model_path: Path, pairs: Path, cache_dir: Path, chunk: int) -> None:
    import torch
    from trl import DPOTrainer

    from harness import data, models, refcache, training
    from harness.spec import SourceSpec

    torch.set_num_threads(1)
    training._REF_CHUNK = chunk
    rows = data.load_source("hh", SourceSpec(path=str(pairs))).train
    model, tokenizer = models.load(str(model_path))
    config = training.dpo_config({"max_steps": 1}, cache_dir / "out", 0, has_eval=False, precompute_ref=True)
    settings = training.resolved_train_settings(config, list(training.REFERENCE_SETTINGS))
    cache = refcache.open_for(cache_dir, model, tokenizer, {"name": str(model_path)}, settings)
    computed = 0
    trls = DPOTrainer._precompute_ref_logps

    def counted(self, dataset, name, batch_size):  # noqa: ANN001, ANN202 - TRL's signature
        nonlocal computed
        computed += len(dataset)
        return trls(self, dataset, name, batch_size)

    DPOTrainer._precompute_ref_logps = counted
    started = time.perf_counter()
    training.dpo_trainer(model, tokenizer, rows, config, ref_cache=cache)
    print(json.dumps({"seconds": time.perf_counter() - started, "computed": computed}))


if __name__ == "__main__":
    main()
