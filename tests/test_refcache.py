"""The study's reference log-prob cache: training from it equals TRL computing the reference itself,
it misses when anything the reference depends on changes, and a second trial reuses the first one's pairs.

Each training here is TRL's DPOTrainer, built through the harness's adapter (harness.training) on the toy
model: 8 pairs, batches of 4, 2 steps, one held-out evaluation.
"""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from harness import models, refcache, training
from harness.refcache import RefCache
from harness.toy import toy_pairs

TRAIN = {"max_steps": 2, "per_device_train_batch_size": 4, "learning_rate": 1e-3, "logging_steps": 1}
# Wall-clock figures TRL logs with the metrics; everything else it logs must match.
_TIMINGS = ("runtime", "per_second", "total_flos")
KINDS = ("prompt", "chosen", "rejected")


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return toy_pairs("identity")[:16]


def train(
    folder: Path,
    model_path: Path,
    pairs: tuple[list[dict], list[dict]],
    cache: RefCache | None = None,
    lora: bool = False,
    said: list[str] | None = None,
    **settings: Any,
) -> tuple[dict[str, Any], list[tuple[int, dict]]]:
    """Train a fresh toy model; returns its trained weights (LoRA's: the adapters) and every metric TRL logged."""
    import transformers

    transformers.set_seed(0)
    model, tokenizer = models.load(str(model_path))
    config = training.dpo_config(TRAIN | settings, folder, 0, eval_every=2, precompute_ref=cache is not None)
    logs: list[tuple[int, dict]] = []
    peft = training.lora_config(r=4, alpha=8, dropout=0.0, target_modules="all-linear") if lora else None
    trained = training.train_dpo(
        model,
        tokenizer,
        *pairs,
        config,
        peft,
        on_log=lambda step, m: logs.append((step, m)),
        ref_cache=cache,
        on_status=said.append if said is not None else None,
    )
    weights = {k: v.detach().clone() for k, v in trained.named_parameters() if v.requires_grad}  # what trained
    return weights, [(step, {k: v for k, v in m.items() if not k.endswith(_TIMINGS)}) for step, m in logs]


def study_cache(folder: Path, model_path: Path, **settings: Any) -> RefCache:
    """The cache as a trial opens it: identity from the toy model, its tokenizer and the TRL settings."""
    model, tokenizer = models.load(str(model_path))
    config = training.dpo_config(TRAIN | settings, folder, 0, precompute_ref=True)
    reference_settings = training.resolved_train_settings(config, list(training.REFERENCE_SETTINGS))
    return refcache.open_for(folder, model, tokenizer, {"name": str(model_path)}, reference_settings)


def assert_same_training(expected: tuple, got: tuple) -> None:
    (want_weights, want_logs), (weights, logs) = expected, got
    assert [step for step, _ in logs] == [step for step, _ in want_logs]
    for (_, want), (_, metrics) in zip(want_logs, logs, strict=True):
        assert metrics.keys() == want.keys()
        for key in [k for k in want if k.endswith("rewards/accuracies")]:
            # Before the first update every margin is 0 up to rounding (the reference batched otherwise than
            # the policy): an accuracy then counts the signs of rounding errors, so it is not compared.
            if abs(want[key.replace("accuracies", "margins")]) < 1e-5:
                want, metrics = ({k: v for k, v in m.items() if k != key} for m in (want, metrics))
        assert metrics == pytest.approx(want, rel=1e-4, abs=1e-5)
    assert weights.keys() == want_weights.keys()
    # Adam normalises each update, so a rounding-level gradient (the reference batched otherwise than the policy;
    # a weight the loss barely touches, such as the LM head's row of a token no pair uses) can move a weight by
    # up to half a step either way: here at most 0.12 of a step, 44 weights of the toy's 1M past a hundredth.
    # A wrong reference log-prob fails the logged metrics above from the first step.
    step, off, total = TRAIN["learning_rate"], 0, 0
    for name, tensor in weights.items():
        diff = (tensor - want_weights[name]).abs()
        assert diff.max() <= step / 2, name
        off, total = off + int((diff > step / 100).sum()), total + diff.numel()
    assert off <= total / 10_000, f"{off} of {total} weights differ by more than a hundredth of a step"


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("loss", ["sigmoid", "ipo"])
def test_a_second_trial_reuses_the_first_trials_pairs_and_trains_as_trl_would(
    tmp_path: Path, toy_model_path: Path, rows: list[dict], loss: str, lora: bool
) -> None:
    heldout = rows[12:16]  # the same held-out pairs for every trial of a study
    first = study_cache(tmp_path / "study", toy_model_path, loss_type=loss)
    other = "ipo" if loss == "sigmoid" else "sigmoid"  # another loss, β and mix: other training pairs
    train(tmp_path / "first", toy_model_path, (rows[4:12], heldout), first, lora=lora, loss_type=other, beta=0.5)
    assert (first.hits, first.misses) == (0, 12)  # TRL computed every pair; the cache kept them

    own = train(tmp_path / "own", toy_model_path, (rows[:8], heldout), lora=lora, loss_type=loss)
    second = study_cache(tmp_path / "study", toy_model_path, loss_type=loss)
    cached = train(tmp_path / "second", toy_model_path, (rows[:8], heldout), second, lora=lora, loss_type=loss)
    assert (second.hits, second.misses) == (4 + 4, 4)  # rows 4-7 and the held-out pairs; TRL computed rows 0-3
    assert_same_training(own, cached)


@pytest.fixture
def reference(toy_model: tuple) -> Any:
    """reference(tokenizer, **train) -> the cache of that reference, keyed as a trial keys it."""
    model, _ = toy_model

    def cache(tokenizer: Any, folder: Path, **train: Any) -> RefCache:
        config = training.dpo_config(TRAIN | train, folder, 0, precompute_ref=True)
        settings = training.resolved_train_settings(config, list(training.REFERENCE_SETTINGS))
        return refcache.open_for(folder, model, tokenizer, {"name": "toy"}, settings)

    return cache


def test_a_changed_template_or_max_length_misses_the_cache(tmp_path: Path, toy_model_path: Path, reference) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(toy_model_path)
    ids = ([5, 6, 7], [8, 9], [10])
    stored = reference(tokenizer, tmp_path)
    stored.put({stored.key(*ids): (-1.5, -2.5)})

    def found(cache: RefCache) -> dict:
        return cache.get([cache.key(*ids)])

    assert list(found(reference(tokenizer, tmp_path, beta=0.9, loss_type="ipo", learning_rate=1e-5)).values()) == [
        (-1.5, -2.5)
    ]  # β, loss and learning rate do not change the reference
    assert not found(reference(tokenizer, tmp_path, max_length=64))
    assert not found(reference(tokenizer, tmp_path, ld_alpha=0.5))
    template = tokenizer.chat_template.replace("<|im_end|>\\n", "<|im_end|>")  # no newline after a turn
    assert template != tokenizer.chat_template
    tokenizer.chat_template = template
    assert not found(reference(tokenizer, tmp_path))


def test_the_cache_is_on_unless_the_reference_moves_or_the_spec_says_no() -> None:
    assert refcache.enabled(True, {"beta": 0.1})
    assert not refcache.enabled(False, {})
    assert not refcache.enabled(True, {"sync_ref_model": True})  # default on, quietly off where it cannot hold
    assert not refcache.enabled(True, {"precompute_ref_log_probs": False})


_WRITER = """
import sys
from harness.refcache import RefCache
cache = RefCache.open(sys.argv[1], "same-reference")
for start in range(0, 400, 20):  # many small transactions, interleaved with the other writer's
    keys = [cache.key([n], [n], [n]) for n in range(start, start + 20)]
    cache.get(keys)
    cache.put({key: (-1.0 * n, -2.0 * n) for key, n in zip(keys, range(start, start + 20))})
"""


def test_trials_writing_at_once_keep_every_pair(tmp_path: Path) -> None:
    import subprocess
    import sys

    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)]) for _ in range(2)]
    assert [w.wait(timeout=60) for w in writers] == [0, 0]
    cache = RefCache.open(tmp_path, "same-reference")
    found = cache.get([cache.key([n], [n], [n]) for n in range(400)])
    assert [found[cache.key([n], [n], [n])] for n in (0, 399)] == [(0.0, 0.0), (-399.0, -798.0)]
    assert (cache.hits, cache.misses) == (400, 0)


_OPENERS = """
import multiprocessing, sys
from pathlib import Path
from harness.refcache import RefCache

def first_look(folder, ready):
    ready.wait()  # all three at once
    RefCache.open(folder, "same-reference").get(["a key"])  # connects: the file is new

if __name__ == "__main__":
    fork = multiprocessing.get_context("fork")  # cheap: harness.refcache is imported once
    for n in range(int(sys.argv[2])):
        ready = fork.Barrier(3)
        openers = [fork.Process(target=first_look, args=(Path(sys.argv[1]) / str(n), ready)) for _ in range(3)]
        for opener in openers:
            opener.start()
        codes = [opener.join() or opener.exitcode for opener in openers]
        if any(codes):
            sys.exit(f"study {n}: exit codes {codes}")
"""


def test_trials_opening_a_new_study_cache_at_once_all_get_it(tmp_path: Path) -> None:
    """The first trials of a `--parallel` study open its new cache file at the same moment: none may fail (SQLite
    answers one of them "database is locked" at once while another turns the new file to WAL mode)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _OPENERS, str(tmp_path), "30"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_pair_whose_value_cannot_be_stored_is_returned_not_retried(tmp_path: Path) -> None:
    """A NaN (an fp16 overflow in the reference) is not stored (the column is NOT NULL), but the trial gets it, as
    it got TRL's own value before the cache: TRL's NaN check stops the trial instead of the pass looping."""
    cache = RefCache.open(tmp_path, "same-reference")
    keys = [cache.key([n], [n], [n]) for n in range(3)]
    calls: list[list[int]] = []

    def compute(indices: list[int]) -> tuple[list[float], list[float]]:
        calls.append(indices)
        return [float("nan") if i == 1 else -1.0 for i in indices], [-2.0] * len(indices)

    chosen, rejected = cache.fill(keys, compute, chunk=2)
    assert calls == [[0, 1], [2]] and math.isnan(chosen[1]) and (chosen[0], rejected) == (-1.0, [-2.0] * 3)
    assert set(cache.get(keys)) == {keys[0], keys[2]}


def test_the_weights_fingerprint_tells_checkpoints_apart_from_a_sample(toy_model: tuple) -> None:
    import copy

    import torch

    model, _ = toy_model
    assert refcache.weights_fingerprint(model) == refcache.weights_fingerprint(copy.deepcopy(model))
    tuned = copy.deepcopy(model)
    with torch.no_grad():  # a fine-tune moves (nearly) every weight; here one tensor moves by a rounding step
        next(iter(tuned.parameters())).mul_(1 + 2**-6)
    assert refcache.weights_fingerprint(tuned) != refcache.weights_fingerprint(model)
    big = torch.nn.Linear(1024, 1024)  # 1M values: only a strided sample is read
    before = refcache.weights_fingerprint(big)
    with torch.no_grad():
        big.weight.add_(1e-3)
    assert refcache.weights_fingerprint(big) != before


def test_probes_read_the_references_log_probs_a_past_trial_stored(tmp_path: Path, toy_model: tuple, reference) -> None:
    """The probes' reference log-probs come from the study's cache once a trial has scored the pairs: the same
    implicit rewards, with no reference forward at all (the reference here is None); a new max_length misses."""
    import copy

    import torch

    from harness.scoring import lm, probes

    model, tokenizer = toy_model
    policy = copy.deepcopy(model)  # a "trained" policy: nonzero implicit rewards to compare
    with torch.no_grad():
        for param in policy.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    pairs, cut = toy_pairs("shortcut")[:6], lm.Truncation()
    direct = probes.log_ratios(policy, model, tokenizer, pairs, cut)

    first = reference(tokenizer, tmp_path).for_scoring()
    assert probes.log_ratios(policy, model, tokenizer, pairs, cut, first) == direct
    assert (first.hits, first.misses) == (0, 6)
    later = reference(tokenizer, tmp_path, beta=0.5).for_scoring()  # another trial of the study
    cached = probes.log_ratios(policy, None, tokenizer, pairs, cut, later)
    assert cached.chosen == pytest.approx(direct.chosen, abs=1e-6)
    assert cached.rejected == pytest.approx(direct.rejected, abs=1e-6)
    assert (later.hits, later.misses) == (6, 0)

    shorter = reference(tokenizer, tmp_path, max_length=24).for_scoring()
    probes.log_ratios(policy, model, tokenizer, pairs, lm.Truncation(max_length=24), shorter)
    assert shorter.hits == 0, "pairs cut differently are other pairs"
    training = reference(tokenizer, tmp_path)  # TRL's values for the same reference live under other keys
    assert training.key(*[[1, 2]] * 3) != first.key(*[[1, 2]] * 3)

    def full_disk(self: RefCache, values: dict) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    stored: list[int] = []  # a long held-out set's pass goes in chunks, as training's: parallel trials split them
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(refcache, "CHUNK", 4)
        patch.setattr(
            RefCache, "put", lambda self, values, put=RefCache.put: stored.append(len(values)) or put(self, values)
        )
        probes.log_ratios(
            policy, model, tokenizer, pairs, cut, reference(tokenizer, tmp_path / "chunked").for_scoring()
        )
    assert stored == [4, 2]

    failing = reference(tokenizer, tmp_path / "full").for_scoring()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RefCache, "put", full_disk)
        assert probes.log_ratios(policy, model, tokenizer, pairs, cut, failing) == direct, "scored without the cache"


def test_a_cache_that_cannot_be_written_leaves_the_reference_to_trl(
    tmp_path: Path, toy_model_path: Path, rows: list[dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk or a read-only study folder costs the trial its cache, not its training (as the token cache)."""
    pairs = (rows[:8], rows[8:12])
    own = train(tmp_path / "own", toy_model_path, pairs)
    cache = study_cache(tmp_path / "study", toy_model_path)

    def full_disk(self: RefCache, values: dict) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(RefCache, "put", full_disk)
    said: list[str] = []
    assert_same_training(own, train(tmp_path / "cached", toy_model_path, pairs, cache, said=said))
    assert "reference log-probs of the train pairs: computing 8 (cache failed)" in said


def test_the_reference_pass_goes_longest_first_and_gives_trls_values_in_order(
    tmp_path: Path, toy_model_path: Path, toy_model: tuple
) -> None:
    """Long and short pairs interleaved, as in a real preference set: the harness's reference pass (with the
    study's cache or without) feeds TRL pairs of like length, so it pads fewer tokens, and returns TRL's own
    values for each pair, in the dataset's order."""
    from trl import DPOTrainer

    model, tokenizer = toy_model
    rows = []
    for n, pair in enumerate(toy_pairs("general")[:12]):
        repeat = 1 + (n * 3) % 8  # 1, 4, 7, 2, 5, ...: widths from 20 tokens to the toy's 128, interleaved
        question = " ".join([pair["prompt"][-1]["content"]] * repeat)
        rows.append(pair | {"prompt": pair["prompt"][:-1] + [{"role": "user", "content": question}]})
    cache = study_cache(tmp_path / "study", toy_model_path)  # first: a new DPOConfig resets a built trainer's state
    config = training.dpo_config({"max_steps": 1, "per_device_train_batch_size": 4}, tmp_path, 0, has_eval=False)
    trainer = training.dpo_trainer(model, tokenizer, rows, config)
    prepared, collate = trainer.train_dataset, trainer.data_collator
    padded: list[int] = []

    def counting(examples: list[dict]) -> dict:
        batch = collate(examples)
        padded[-1] += batch["input_ids"].numel()
        return batch

    trainer.data_collator = counting

    def reference_pass(cache: RefCache | None, own: bool = False) -> Any:
        trainer.ref_cache = cache
        padded.append(0)
        if own:
            return DPOTrainer._precompute_ref_logps(trainer, prepared, "train", 4)
        return trainer._precompute_ref_logps(prepared, "train", 4)

    trls = reference_pass(None, own=True)
    for ours in (reference_pass(None), reference_pass(cache)):
        assert ours["prompt_ids"] == prepared["prompt_ids"]  # the dataset's order
        for column in ("ref_chosen_logps", "ref_rejected_logps"):
            assert ours[column] == pytest.approx(trls[column], rel=1e-5, abs=1e-5)
    assert (cache.hits, cache.misses) == (0, len(rows))
    # a batch of 4 pairs is 8 rows (chosen and rejected), each as wide as the batch's longest pair
    widths = [len(p) + max(len(c), len(r)) for p, c, r in zip(*(prepared[f"{k}_ids"] for k in KINDS), strict=True)]
    longest_first = sorted(widths, reverse=True)
    assert padded[1:] == [sum(8 * longest_first[i] for i in range(0, len(rows), 4))] * 2
    assert padded[1] < 0.75 * padded[0]  # TRL's own pass, in the dataset's order


def test_a_reference_pass_cut_short_leaves_the_next_trial_the_chunks_it_finished(
    tmp_path: Path, toy_model_path: Path, rows: list[dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A study's first trial on a large set spends long on the reference pass; killed midway, the chunks it
    finished are in the cache, and the next trial computes only the rest."""
    from trl import DPOTrainer

    monkeypatch.setattr(training, "_REF_CHUNK", 4)
    pairs = (rows[:12], rows[12:16])
    passes: list[int] = []
    trls = DPOTrainer._precompute_ref_logps

    def killed_in_the_second(self: Any, dataset: Any, name: str, batch_size: int) -> Any:
        passes.append(len(dataset))
        if len(passes) == 2:
            raise KeyboardInterrupt  # what a stopped sweep's trial process gets
        return trls(self, dataset, name, batch_size)

    monkeypatch.setattr(DPOTrainer, "_precompute_ref_logps", killed_in_the_second)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "first", toy_model_path, pairs, study_cache(tmp_path / "study", toy_model_path))
    assert passes == [4, 4]
    own = train(tmp_path / "own", toy_model_path, pairs)
    passes.clear()

    def counted(self: Any, dataset: Any, name: str, batch_size: int) -> Any:
        passes.append(len(dataset))
        return trls(self, dataset, name, batch_size)

    monkeypatch.setattr(DPOTrainer, "_precompute_ref_logps", counted)
    again, said = study_cache(tmp_path / "study", toy_model_path), []
    assert_same_training(own, train(tmp_path / "again", toy_model_path, pairs, again, said=said))
    assert (again.hits, again.misses) == (4, 8 + 4)  # the first chunk; the rest and the held-out pairs
    assert passes == [4, 4, 4]  # the training pairs' two missing chunks, the held-out pairs
    # what the sweep's live bar shows: a long pass's progress, and from its second chunk on the time left
    assert [text.split(", about ")[0] for text in said] == [
        "preparing 12 train pairs: chat template, tokens",
        "preparing 4 eval pairs: chat template, tokens",
        "reference log-probs of the train pairs: 0/8 computed",
        "reference log-probs of the train pairs: 4/8 computed",
        "reference log-probs of the train pairs: 8/8 computed",
        "reference log-probs of the eval pairs: 0/4 computed",
        "reference log-probs of the eval pairs: 4/4 computed",
    ]
    assert said[3].endswith(" s left") and [text for text in said if text.endswith("left")] == [said[3]]
