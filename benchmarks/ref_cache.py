"""The study's reference log-prob cache: an 8-trial toy sweep with the cache (the default) vs without it.

Runs `harness sweep sweeps/beta.yaml` twice into scratch folders, once as shipped and once with
`model.ref_cache: false` (TRL then holds a reference copy and runs its forward pass at every step),
and prints the ratios measured in this one run: sweep wall time and mean training phase per trial
(MLflow's time.train_s), cache / no cache, and the sweeps' CPU seconds (all their processes), which a
shared machine's load moves less than wall time. The goal: sweep wall time with the cache <= 0.8 of without.
The cached sweep's wall time is also the default sweep's (goal: <= 300 s on a 2-core CPU).

    .venv/bin/python benchmarks/ref_cache.py [--trials 8]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import DEFAULT_SPEC, machine, run_sweep, spec_with


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    trials = str(parser.parse_args().trials)
    with tempfile.TemporaryDirectory(prefix="harness-bench-") as tmp:
        folder = Path(tmp)
        cached = run_sweep(folder / "cache", DEFAULT_SPEC, "--trials", trials)
        plain = run_sweep(folder / "plain", spec_with(folder, {"model": {"ref_cache": False}}), "--trials", trials)
    print(f"\n{trials} trials of {DEFAULT_SPEC.relative_to(DEFAULT_SPEC.parents[1])}; machine: {machine()}")
    print(f"{'':24}{'cache':>10}{'no cache':>10}{'ratio':>8}")
    for label, a, b in (
        ("sweep wall s", cached.wall_s, plain.wall_s),
        ("sweep CPU s", cached.cpu_s, plain.cpu_s),
        ("mean time.train_s", cached.mean("time.train_s"), plain.mean("time.train_s")),
        ("mean time.train_cpu_s", cached.mean("time.train_cpu_s"), plain.mean("time.train_cpu_s")),
        ("mean time.total_s", cached.mean("time.total_s"), plain.mean("time.total_s")),
    ):
        print(f"{label:<24}{a:10.1f}{b:10.1f}{a / b:8.2f}")
    hits, misses = cached.total("refcache.hits"), cached.total("refcache.misses")
    print(f"cache: {hits:.0f} hits, {misses:.0f} misses over the sweep; time.ref_s {cached.total('time.ref_s'):.1f} s")
    print(f"goal: sweep with cache / without <= 0.8 -> wall {cached.wall_s / plain.wall_s:.2f}", end="")
    print(f", CPU {cached.cpu_s / plain.cpu_s:.2f}")
    print(f"goal: default sweep <= 300 s -> {cached.wall_s:.0f} s")


if __name__ == "__main__":
    main()
