"""Scoring memory against training memory, on a model with a real vocabulary.

A random-init Qwen2-layout model with Qwen's 151,936-token vocabulary (harness.toy.real_shape: tiny
hidden size, 2 layers, so the vocabulary dominates as it does for 0.5B-8B models' logits) and a batch
of preference pairs whose sequences are exactly `length` tokens after TRL's truncation. Each case runs
in a process of its own and reports the peak memory of one operation above what the process held
once the model was loaded:

- train: one DPO step through harness.training (TRL's DPOTrainer: reference copy, forward, backward,
  optimizer state);
- score: the overfit probe through harness.scoring (reference loaded as a trial does, log-ratios of
  the same pairs as training and held-out pairs, KL(π‖πref) on texts of the same length).

Memory is peak RSS on CPU (VmHWM, reset before the operation) and torch.cuda.max_memory_allocated on
a GPU. The goal: score / train <= 2 at 512 and 2,048 tokens.

    .venv/bin/python benchmarks/scoring_memory.py [--lengths 512 2048] [--batch 4]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--batch", type=int, default=4, help="pairs per training step (per_device_train_batch_size)")
    parser.add_argument("--case", choices=["train", "score"], help=argparse.SUPPRESS)  # one measurement (internal)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(measure(args.case, Path(args.model), args.lengths[0], args.batch)))
        return
    from harness.toy import real_shape

    with tempfile.TemporaryDirectory(prefix="harness-mem-") as tmp:
        model = real_shape.save(Path(tmp) / "model")
        rows = []
        for length in args.lengths:
            found = {case: run_case(case, model, length, args.batch) for case in ("train", "score")}
            rows.append((length, found))
    print_figures(rows, args.batch)


def run_case(case: str, model: Path, length: int, batch: int) -> dict:
    command = [sys.executable, __file__, "--case", case, "--model", str(model), "--lengths", str(length)]
    done = subprocess.run([*command, "--batch", str(batch)], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{case} at {length} tokens failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- inside a case's process


def measure(case: str, folder: Path, length: int, batch: int) -> dict:
    import torch

    from harness import models

    torch.manual_seed(0)
    model, tokenizer = models.load(str(folder))
    pairs = make_pairs(tokenizer, length, batch)
    train = {"max_length": length, "per_device_train_batch_size": batch, "max_steps": 1, "learning_rate": 1e-5}
    meter = Meter(model.device)
    meter.start()
    extra: dict = {}
    if case == "train":
        from harness import training

        with tempfile.TemporaryDirectory() as out:
            config = training.dpo_config(train, Path(out), seed=0, has_eval=False)
            training.train_dpo(model, tokenizer, pairs, [], config)
    else:
        from harness.scoring import lm, memory, probes

        with memory.recording() as record:
            reference, _ = models.load(str(folder))  # as a trial loads its reference for scoring
            labelled = probes.Labelled({"bench": pairs}, {"bench": pairs}, {"bench": 1.0})
            texts = [p["prompt"] + p["chosen"] for p in pairs]
            probes.overfit(model, reference, tokenizer, labelled, texts, lm.truncation(train))
        extra = record.to_json()
        extra["lengths"] = sorted(
            {len(s.ids) for p in pairs for s in lm.encode_pair(tokenizer, p, lm.truncation(train))}
        )
    return {"peak": meter.peak(), "before": meter.before, "device": str(model.device), **extra}


def make_pairs(tokenizer, length: int, batch: int) -> list[dict]:
    """Plain-text pairs: a quarter-length prompt and answers long enough that TRL's max_length cuts every
    sequence to exactly `length` tokens."""
    import torch

    gen = torch.Generator().manual_seed(0)

    def text(n: int) -> str:
        return tokenizer.decode(torch.randint(10, 800, (n,), generator=gen).tolist())

    return [{"prompt": text(length // 4), "chosen": text(length), "rejected": text(length)} for _ in range(batch)]


class Meter:
    """Peak memory of what runs between start() and peak(), above what was held at start()."""

    def __init__(self, device):
        self.cuda = getattr(device, "type", "cpu") == "cuda"
        self.before = 0

    def start(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.before = torch.cuda.memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (peak RSS) to the current RSS
            self.before = _status_kb("VmRSS") * 1024

    def peak(self) -> int:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated()
        return _status_kb("VmHWM") * 1024


def _status_kb(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


# ---------------------------------------------------------------- figures


def print_figures(rows: list[tuple[int, dict]], batch: int) -> None:
    device = rows[0][1]["train"]["device"]
    kind = "GPU max_memory_allocated" if device.startswith("cuda") else "CPU peak RSS"
    print(f"\nrandom-init Qwen2 layout, 151,936-token vocabulary; {batch} pairs per step; {kind} (MiB)")
    header = ("tokens", "train", "score", "score/train", "unplanned logits", "logit chunk")
    print("  ".join(f"{h:>{w}}" for h, w in zip(header, (6, 14, 14, 11, 16, 11), strict=True)))
    for length, found in rows:
        score = found["score"]
        work = {k: (v["peak"] - v["before"]) / MIB for k, v in found.items()}
        total = {k: v["peak"] / MIB for k, v in found.items()}
        print(
            f"{length:>6}  {work['train']:>7.0f} ({total['train']:>4.0f})"
            f"  {work['score']:>7.0f} ({total['score']:>4.0f})"
            f"  {work['score'] / work['train']:>5.2f} ({total['score'] / total['train']:.2f})"
            f"  {score['unchunked_logit_bytes'] / MIB:>16.0f}  {score['largest_logit_tensor_bytes'] / MIB:>11.1f}"
        )
    print(
        "train/score: memory above the loaded model (whole process in brackets); unplanned logits: what "
        "whole-batch float32 logits and their log-softmax would need; logit chunk: the largest logits tensor "
        "scoring allocated. Goal: score/train <= 2."
    )


if __name__ == "__main__":
    main()
