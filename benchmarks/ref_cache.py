"""The study's reference log-prob cache: an 8-trial toy sweep with the cache (the default) vs without it.

Runs `harness sweep sweeps/beta.yaml` as shipped and with `model.ref_cache: false` (TRL then holds a
reference copy and runs its forward pass at every step), one trial at a time on each side in turn (each
sweep resumed with --trials n), so both sides see the same load on a shared machine. Both draw the same
points (same seed, same sampler, same results). Prints ratios measured in this one run, cache / no
cache: the trials' summed time.total_s (the sweep's work, without the resumes' start-up) and training
phase (time.train_s, and its CPU seconds time.train_cpu_s). The goal: <= 0.8.
For the default sweep's own wall time (goal: <= 300 s on a 2-core CPU), run `harness sweep sweeps/beta.yaml`.

    .venv/bin/python benchmarks/ref_cache.py [--trials 8]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import DEFAULT_SPEC, alternate, machine, run_sweep, spec_with


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    trials = parser.parse_args().trials
    with tempfile.TemporaryDirectory(prefix="harness-bench-") as tmp:
        folder = Path(tmp)
        plain_spec = spec_with(folder, {"model": {"ref_cache": False}})
        sides = alternate(
            {
                "cache": lambda n: run_sweep(folder / "cache", DEFAULT_SPEC, "--trials", str(n)),
                "no cache": lambda n: run_sweep(folder / "plain", plain_spec, "--trials", str(n)),
            },
            trials,
        )
    cached, plain = sides["cache"][-1], sides["no cache"][-1]
    print(f"\n{trials} trials of {DEFAULT_SPEC.name}, alternating; machine: {machine()}")
    print(f"{'summed over trials':<24}{'cache':>10}{'no cache':>10}{'ratio':>8}")
    for key in ("time.total_s", "time.train_s", "time.train_cpu_s"):
        a, b = cached.total(key), plain.total(key)
        print(f"{key:<24}{a:10.1f}{b:10.1f}{a / b:8.2f}")
    hits, misses = cached.total("refcache.hits"), cached.total("refcache.misses")
    print(f"cache: {hits:.0f} hits, {misses:.0f} misses over the sweep; time.ref_s {cached.total('time.ref_s'):.1f} s")
    same = [t.get("identity.hit_rate") for t in cached.trials] == [t.get("identity.hit_rate") for t in plain.trials]
    print(f"same identity.hit_rate in every trial: {same}")
    ratio = cached.total("time.total_s") / plain.total("time.total_s")
    print(f"goal: sweep work with cache / without <= 0.8 -> {ratio:.2f}")


if __name__ == "__main__":
    main()
