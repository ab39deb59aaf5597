"""What a large preference file costs a sweep: setup time per trial and memory of each process.

Writes an HH-RLHF-shaped file of N pairs (transcripts of 1-4 turns, answers of 10-120 words, as
in Anthropic/hh-rlhf), then runs a short toy sweep on it (a few steps per trial) and prints, per
trial, what MLflow recorded (setup, training, scoring), and the peak resident memory of the sweep
process and of the largest other process (a trial process), read from /proc while it ran.
The sweep reads the file once; its trials get their drawn pairs from it, so their setup must not
grow with the file.

    .venv/bin/python benchmarks/data_scale.py [--pairs 160000] [--trials 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import ROOT, machine, spec_with, trial_metrics


def hh_file(path: Path, n: int, words: list[str] | None = None) -> None:
    """n HH-RLHF-shaped transcripts: 0-3 earlier exchanges, then a question; turns of 5-120 words drawn from
    `words` (default: 20,000 made-up ones, several tokens each; real words are about one token each)."""
    rng = random.Random(0)
    words = words or [f"w{i}" for i in range(20000)]

    def say(k: int) -> str:
        return " ".join(rng.choices(words, k=k)) + "."

    with path.open("w") as out:
        for _ in range(n):
            turns = "".join(
                f"\n\nHuman: {say(rng.randint(5, 40))}\n\nAssistant: {say(rng.randint(10, 120))}"
                for _ in range(rng.randint(0, 3))
            )
            prompt = f"{turns}\n\nHuman: {say(rng.randint(5, 40))}\n\nAssistant:"
            row = {
                "chosen": f"{prompt} {say(rng.randint(10, 120))}",
                "rejected": f"{prompt} {say(rng.randint(10, 120))}",
            }
            out.write(json.dumps(row) + "\n")


class PeakMemory:
    """Polls /proc for the peak resident memory (VmHWM) of a process and of each of its descendants."""

    def __init__(self, root: int):
        self.root, self.peaks = root, {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def stop(self) -> tuple[float, float]:
        """Peak MB of the root process, and the largest peak of any other."""
        self._done.set()
        self._thread.join()
        root = self.peaks.pop(self.root, 0)
        return root / 1024, max(self.peaks.values(), default=0) / 1024

    def _poll(self) -> None:
        while not self._done.wait(0.2):
            parents = {}
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        status = (entry / "status").read_text()
                    except OSError:
                        continue
                    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
                    parents[int(entry.name)] = (int(fields["PPid"]), int(fields.get("VmHWM", "0 kB").split()[0]))
            for pid, (_, peak) in parents.items():
                ancestor = pid
                while ancestor in parents and ancestor != self.root:
                    ancestor = parents[ancestor][0]
                if ancestor == self.root:
                    self.peaks[pid] = max(self.peaks.get(pid, 0), peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=160_000)
    parser.add_argument("--trials", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="harness-bench-") as tmp:
        folder = Path(tmp)
        hh_file(folder / "hh.jsonl", args.pairs)
        size_mb = (folder / "hh.jsonl").stat().st_size / 2**20
        spec = spec_with(
            folder,
            {
                "study": "data-scale",
                "data": {"sources": {"hh": {"path": str(folder / "hh.jsonl")}}, "mix": {"hh": 1.0}, "size": 64},
                "train": {"max_steps": 4, "per_device_train_batch_size": 4, "max_length": 256},
                "search": {"trials": args.trials},
            },
        )
        command = [
            sys.executable,
            "-m",
            "harness.cli",
            "sweep",
            str(spec),
            "--storage",
            f"sqlite:///{folder / 'optuna.db'}",
            "--tracking-uri",
            f"sqlite:///{folder / 'mlflow.db'}",
            "--output-dir",
            str(folder / "out"),
            "--report-dir",
            str(folder / "report"),
        ]
        env = os.environ | {"HARNESS_CACHE_DIR": os.environ.get("HARNESS_CACHE_DIR", str(ROOT / "outputs/cache"))}
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, env=env)
        memory = PeakMemory(process.pid)
        if process.wait():
            sys.exit(f"the sweep failed (exit {process.returncode})")
        wall = time.perf_counter() - started
        sweep_mb, other_mb = memory.stop()
        trials = trial_metrics(f"sqlite:///{folder / 'mlflow.db'}", "data-scale")
    print(f"\n{args.pairs:,} HH-shaped pairs ({size_mb:.0f} MB), {len(trials)} trials, sweep {wall:.1f} s")
    for i, t in enumerate(trials):
        setup, train, score = (t.get(f"time.{k}_s", float("nan")) for k in ("setup", "train", "eval"))
        print(f"  trial {i}: setup {setup:.1f} s, training {train:.1f} s, scoring {score:.1f} s")
    print(f"peak memory: sweep process {sweep_mb:,.0f} MB, largest other process {other_mb:,.0f} MB")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
