"""`--parallel 2` vs one trial at a time on the CPU: the sweep's wall time.

Runs `harness sweep sweeps/beta.yaml --trials N` twice into scratch folders, with `--parallel 1`
and `--parallel 2` (the two trials share the CPU's cores), and prints the wall-time ratio measured
in this one run. On a 2-core CPU the trials compete for the same cores, so the ratio shows what is
won by overlapping one trial's scoring and setup with another's training, not a 2x speed-up.

    .venv/bin/python benchmarks/parallel.py [--trials 4]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import DEFAULT_SPEC, machine, run_sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    trials = str(parser.parse_args().trials)
    with tempfile.TemporaryDirectory(prefix="harness-bench-") as tmp:
        one = run_sweep(Path(tmp) / "one", DEFAULT_SPEC, "--trials", trials, "--parallel", "1")
        two = run_sweep(Path(tmp) / "two", DEFAULT_SPEC, "--trials", trials, "--parallel", "2")
    print(f"\n{trials} trials; machine: {machine()}")
    print(f"sweep wall s: --parallel 1 {one.wall_s:.1f}, --parallel 2 {two.wall_s:.1f}")
    print(f"--parallel 2 / --parallel 1: {two.wall_s / one.wall_s:.2f}")
    print(f"mean time.train_s per trial: {one.mean('time.train_s'):.1f} vs {two.mean('time.train_s'):.1f}")


if __name__ == "__main__":
    main()
