"""Sampled identity answers on a real vocabulary: the harness's draw (harness.scoring.lm.Draw) vs HF's own.

HF's sampling draws each token with torch.multinomial over the whole vocabulary; the harness decodes
greedily behind a logits processor that draws from the same distribution by inverse CDF. Both sides
generate the toy identity suite's sampled answers (its prompts, k, temperature and max_new_tokens) with
a random-init Qwen2-layout model with Qwen's 151,936-token vocabulary (harness.toy.real_shape),
alternating sides each round; greedy answers to the same prompts give the forward passes'
own cost for scale. Both sides run the batches harness.scoring.memory plans for the prompts.

    .venv/bin/python benchmarks/sampling.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import alternate, machine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import torch

    from harness import models
    from harness.scoring import identity, lm, memory
    from harness.scoring.suites import load_identity
    from harness.toy import real_shape

    suite = load_identity(ROOT / "evals" / "identity" / "athene.yaml")
    prompts = [identity.messages(suite, p) for p in suite.prompts]
    k, temperature, tokens = suite.sampling.k, suite.sampling.temperature, suite.max_new_tokens

    def hf_sampling(model, tokenizer) -> None:
        """HF's own sampling, in the batches lm.generate plans for the same prompts (its code before lm.Draw)."""
        encoded = [lm.prompt_ids(tokenizer, p) for p in prompts]
        shape, budget = memory.Shape.of(model), memory.Budget.for_device(torch.device("cpu"))
        plan = memory.plan_generation([len(e) for e in encoded], tokens, k, shape, budget)
        pad = tokenizer.pad_token_id
        for batch, width in zip(plan.batches, plan.widths, strict=True):
            rows = [encoded[i] for i in batch]
            ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
            mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
            with torch.no_grad():
                model.generate(
                    input_ids=ids, attention_mask=mask, max_new_tokens=tokens, pad_token_id=pad, do_sample=True,
                    num_return_sequences=k, temperature=temperature, top_k=0, top_p=1.0,
                )  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="harness-sampling-") as tmp:
        model, tokenizer = models.load(str(real_shape.save(Path(tmp) / "model")))
        model.eval()

        def timed(side: str):
            def run(round_: int) -> float:
                torch.manual_seed(round_)
                start = time.perf_counter()
                if side == "harness":
                    lm.generate(model, tokenizer, prompts, tokens, k, temperature, seed=round_)
                elif side == "hf":
                    hf_sampling(model, tokenizer)
                else:
                    lm.generate(model, tokenizer, prompts, tokens)
                return time.perf_counter() - start

            return run

        times = alternate({side: timed(side) for side in ("harness", "hf", "greedy")}, args.rounds)
    med = {side: statistics.median(t) for side, t in times.items()}
    print(f"machine: {machine()}")
    print(f"{len(prompts)} prompts x {k} samples, {tokens} new tokens at most, vocabulary {len(tokenizer):,}")
    for side, label in (("harness", "harness Draw"), ("hf", "HF multinomial"), ("greedy", "greedy, 1 answer")):
        print(f"  {label:17s} " + "  ".join(f"{t:6.1f} s" for t in times[side]) + f"   median {med[side]:.1f} s")
    print(f"sampled answers, harness / HF: {med['harness'] / med['hf']:.2f}")


if __name__ == "__main__":
    main()
