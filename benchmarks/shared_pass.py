"""The passes of a parallel study's first trials over the same pairs, split between them (the harness) vs each
trial doing every pair (as before it, and as TRL does): the reference pass (--what reference) or TRL's
preparation of the pairs, chat template and tokenization (--what tokens).

N trial-like processes start at once (--processes, default 2: one per core here; one per device with
--devices), each building the harness's DPOTrainer over the same HH-shaped pairs with the study's cache (the
reference cache, or the token cache): its constructor prepares the pairs and, for the reference, runs the
reference pass; that is what is timed. "shared": one study cache, so the processes split the pairs
(harness.sharing); "apart": a cache each, so each does every pair, as the first wave of a parallel study did.
The processes run one torch thread each, so N processes share N cores as N trials share N devices. Prints,
per side, the slowest process's pass (the first wave waits for it) and the pairs done in all. The chunk is
scaled to the set (--chunk; reference: 8 pairs of 96, as 1,024 of a 12k-pair set; tokens: 500 of 4,000, as
2,000 of a 16k-pair set, and the seconds its chunks grow to likewise), so that the pass has chunks to split.

    .venv/bin/python benchmarks/shared_pass.py [--what reference] [--processes 2] [--pairs 96] [--chunk 8]
    .venv/bin/python benchmarks/shared_pass.py --what tokens [--pairs 4000] [--chunk 500]
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
    parser.add_argument("--what", choices=list(DEFAULTS), default="reference")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--pairs", type=int, help="default: reference 96, tokens 4,000")
    parser.add_argument("--chunk", type=int, help="default: reference 8, tokens 500")
    parser.add_argument("--model", choices=list(real_shape.LAYOUTS), default="real-vocab")
    parser.add_argument("--one", nargs=5, metavar=("WHAT", "MODEL", "PAIRS", "CACHE", "CHUNK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        what, model, pairs, cache, chunk = args.one
        return one_pass(what, Path(model), Path(pairs), Path(cache), int(chunk))
    args.pairs, args.chunk = args.pairs or DEFAULTS[args.what][0], args.chunk or DEFAULTS[args.what][1]
    from data_scale import hh_file
    from ref_cache import toy_words

    with tempfile.TemporaryDirectory(prefix="harness-bench-") as tmp:
        folder = Path(tmp)
        hh_file(folder / "hh.jsonl", args.pairs, words=toy_words())
        model = real_shape.save(folder / "model", **real_shape.LAYOUTS[args.model])
        sides = {}
        for side in ("apart", "shared"):
            caches = [folder / side / (str(n) if side == "apart" else "study") for n in range(args.processes)]
            sides[side] = wave(args.what, model, folder / "hh.jsonl", caches, args.chunk)
    name = "reference pass" if args.what == "reference" else "preparation (chat template, tokens)"
    print(f"\n{name} of {args.processes} trials started at once over the same {args.pairs} HH-shaped pairs")
    print(f"({args.model}, one torch thread each, chunks of {args.chunk}); machine: {machine()}")
    for side, runs in sides.items():
        slowest, each = max(r["seconds"] for r in runs), ", ".join(f"{r['seconds']:.1f}" for r in runs)
        computed = sum(r["computed"] for r in runs)
        print(f"{side:>7}: slowest pass {slowest:.1f} s (each: {each}), pairs done {computed}")
    ratio = max(r["seconds"] for r in sides["shared"]) / max(r["seconds"] for r in sides["apart"])
    print(f"first wave's {name}, shared / apart: {ratio:.2f} (1/{args.processes} = {1 / args.processes:.2f})")


DEFAULTS = {"reference": (96, 8), "tokens": (4000, 500)}  # pairs, chunk


def wave(what: str, model: Path, pairs: Path, caches: list[Path], chunk: int) -> list[dict]:
    """The processes at once; each prints its pass's seconds and the pairs it computed."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--one", what, str(model), str(pairs), str(cache), str(chunk)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        for cache in caches
    ]
    return [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]


def one_pass(what: str, model_path: Path, pairs: Path, cache_dir: Path, chunk: int) -> None:
    import torch
    from trl import DPOTrainer

    from harness import data, models, refcache, tokcache, training
    from harness.spec import SourceSpec

    torch.set_num_threads(1)
    training._REF_CHUNK = training._TOKEN_CHUNK = chunk
    tokcache.CHUNK_SECONDS *= chunk / 2000  # the chunks' growth scaled down with the set, as their first size
    rows = data.load_source("hh", SourceSpec(path=str(pairs))).train
    model, tokenizer = models.load(str(model_path))
    reference = what == "reference"
    config = training.dpo_config({"max_steps": 1}, cache_dir / "out", 0, has_eval=False, precompute_ref=reference)
    caches = {}
    if reference:
        settings = training.resolved_train_settings(config, list(training.REFERENCE_SETTINGS))
        caches["ref_cache"] = refcache.open_for(cache_dir, model, tokenizer, {"name": str(model_path)}, settings)
    else:
        settings = training.resolved_train_settings(config, list(tokcache.SETTINGS))
        caches["token_cache"] = tokcache.open_for(cache_dir, tokenizer, settings)
    computed = 0
    method = "_precompute_ref_logps" if reference else "_prepare_dataset"
    trls = getattr(DPOTrainer, method)

    def counted(self, dataset, *args):  # noqa: ANN001, ANN002, ANN202 - TRL's signature
        nonlocal computed
        computed += len(dataset)
        return trls(self, dataset, *args)

    setattr(DPOTrainer, method, counted)
    started = time.perf_counter()
    training.dpo_trainer(model, tokenizer, rows, config, **caches)
    print(json.dumps({"seconds": time.perf_counter() - started, "computed": computed}))


if __name__ == "__main__":
    main()
