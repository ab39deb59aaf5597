"""What the data audit costs: phrase statistics alone, and with TRL-style tokenization for truncation.

A sweep audits its spec's data once, at the start; this prints how its cost grows with the number of
pairs (synthetic pairs with a planted phrase, N pairs each), as ratios measured in one run since this
machine is shared and noisy: seconds per 1,000 pairs with and without the toy
tokenizer, and tokenization's share of the audit.

    .venv/bin/python benchmarks/audit_costs.py [--pairs 1000 4000]
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pairs(n: int) -> list[dict]:
    """Distinct conversational pairs of Zipf-distributed words, 10-60 per answer; half the chosen answers
    carry a planted phrase (the only pattern for the audit to find)."""
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(5000)]
    weights = [1 / (i + 1) for i in range(len(vocab))]

    def text(k: int) -> str:
        return " ".join(rng.choices(vocab, weights, k=k)) + "."

    out = []
    for i in range(n):
        chosen, rejected = text(rng.randint(10, 60)), text(rng.randint(10, 60))
        if i % 2:
            chosen = "Great question! " + chosen
        answer = lambda t: [{"role": "assistant", "content": t}]  # noqa: E731
        out.append(
            {
                "prompt": [{"role": "user", "content": f"Question {i}?"}],
                "chosen": answer(chosen),
                "rejected": answer(rejected),
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, nargs="+", default=[1000, 4000])
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    from harness import audit, models

    tokenizer = AutoTokenizer.from_pretrained(models.resolve("toy", models.cache_dir(ROOT / "outputs")))
    tokenizer.model_max_length = 2**31  # as harness.audit does: lengths are only counted
    print(f"{'pairs':>7} {'s/1k (words)':>13} {'s/1k (+tokens)':>15} {'tokenizing share':>17} shortcuts")
    for n in args.pairs:
        data = pairs(n)
        clock = time.perf_counter()
        words = audit.audit_source("bench", "mem", data)
        plain = time.perf_counter() - clock
        clock = time.perf_counter()
        audit.audit_source("bench", "mem", data, tokenizer=tokenizer, max_length=512)
        full = time.perf_counter() - clock
        found = ", ".join(p.text for p in words.shortcuts)
        print(f"{n:>7} {plain / n * 1000:>13.3f} {full / n * 1000:>15.3f} {1 - plain / full:>17.0%} {found}")


if __name__ == "__main__":
    main()
