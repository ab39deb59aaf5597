"""Trials filling a study cache at once split the work (harness.sharing): each pair computed by one of them, every
trial getting every value, whether a trial dies or hangs holding a claim; for the reference pass and for TRL's
preparation of the pairs (tokenization)."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import refcache, sharing
from harness.refcache import RefCache

_SHARERS = """
import json, multiprocessing, os, signal, sys, time
from pathlib import Path
from harness import sharing
from harness.refcache import RefCache

PAIRS = 48
folder, mode = Path(sys.argv[1]), sys.argv[2]
if mode == "stuck":
    sharing._STALL_S = 2.0  # (600 s in a study; a dead trial's claims are taken over at once, whatever it is)


def trial(name, ready, claimed=None):
    \"\"\"One trial's pass over the same pairs (each repeated once, as a mix cycling a small source does), a chunk
    of 4 at a time; writes which pairs it computed and what it got. With `claimed`, it sets that event once it has
    claimed its first chunk, then dies (mode "killed") or hangs (mode "stuck") in its forward pass.\"\"\"
    cache = RefCache.open(folder, "same-reference")
    keys = [cache.key([n], [n], [n]) for n in list(range(PAIRS)) * 2]
    computed = []

    def compute(indices):
        if claimed is not None:
            claimed.set()
            time.sleep(2.0 if mode == "killed" else 3600)  # the others meanwhile compute the rest, then wait
            os.kill(os.getpid(), signal.SIGKILL)  # claimed, never stored: kill -9, the OOM killer
        time.sleep(0.1)  # a chunk's forward pass
        computed.extend(indices)
        return zip(*((-1.0 * (i % PAIRS), -2.0 * (i % PAIRS)) for i in indices))

    ready.wait()
    got = cache.fill(keys, compute, chunk=4)
    (folder / f"{name}.json").write_text(json.dumps({"computed": computed, "got": got}))


if __name__ == "__main__":
    fork = multiprocessing.get_context("fork")  # cheap: harness.refcache is imported once
    if mode == "share":
        ready = fork.Barrier(3)
        trials = [fork.Process(target=trial, args=(str(n), ready), daemon=True) for n in range(3)]
    else:  # the first trial claims a chunk, then dies or hangs in it while two others compute the rest and wait
        claimed = fork.Event()
        first = fork.Process(target=trial, args=("first", fork.Barrier(1), claimed), daemon=True)
        first.start()
        claimed.wait(timeout=60)
        ready = fork.Barrier(2)
        trials = [fork.Process(target=trial, args=(f"next{n}", ready), daemon=True) for n in range(2)]
    for t in trials:
        t.start()
    for t in trials:
        t.join(timeout=60)  # a trial waiting for ever on a claim fails, not hangs (daemon: ended at exit)
    sys.exit(0 if all(t.exitcode == 0 for t in trials) else f"exit codes {[t.exitcode for t in trials]}")
"""
EXPECTED = [[-1.0 * (n % 48) for n in range(96)], [-2.0 * (n % 48) for n in range(96)]]


def _share(folder: Path, mode: str) -> dict[str, dict]:
    done = subprocess.run(
        [sys.executable, "-c", _SHARERS, str(folder), mode], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")}


def test_trials_filling_the_cache_at_once_share_the_pairs(tmp_path: Path) -> None:
    """The first trials of a `--parallel`/`--devices` study all lack every pair: each pair is computed by one of
    them (not by every one), the work is spread, and every trial gets every pair's values."""
    trials = _share(tmp_path, "share")
    assert all(t["got"] == EXPECTED for t in trials.values())
    computed = sorted(n for t in trials.values() for n in t["computed"])
    assert computed == list(range(48)), "each pair once, by one trial (a repeated pair: its first index)"
    assert sum(bool(t["computed"]) for t in trials.values()) >= 2, "the pass is shared"
    assert not list((tmp_path / "refcache" / "claims").iterdir()), "each trial removes its lock file"


@pytest.mark.parametrize("mode", ["killed", "stuck"])
def test_a_trial_that_dies_or_hangs_holding_a_claim_leaves_its_pairs_to_the_others(tmp_path: Path, mode: str) -> None:
    """killed: its lock dropped by the kernel, a trial waiting for its chunk takes it over at once (and removes
    the dead trial's lock file); stuck: alive but silent, its claim is taken over after _STALL_S. Either way by
    one of the two waiting trials: each pair is still computed once."""
    trials = _share(tmp_path, mode)
    assert sorted(trials) == ["next0", "next1"]  # the first never finished
    assert sorted(n for t in trials.values() for n in t["computed"]) == list(range(48))
    assert all(t["got"] == EXPECTED for t in trials.values())
    if mode == "killed":
        assert not list((tmp_path / "refcache" / "claims").iterdir())


def test_a_claim_skips_stored_and_held_pairs_and_takes_over_dead_and_stuck_ones(tmp_path: Path) -> None:
    """Claims.take on a table set by hand: which of a trial's missing pairs it may compute."""
    cache = RefCache.open(tmp_path, "same-reference")
    cache.put({"stored": (-1.0, -2.0), "stored, held": (-3.0, -4.0)})
    folder = tmp_path / "refcache" / sharing.CLAIMS_FOLDER
    with sharing.Claims(cache._db(), tmp_path / "refcache", refcache.stored_values) as claims:
        live = os.open(folder / "live", os.O_RDWR | os.O_CREAT)  # another trial, filling now
        fcntl.flock(live, fcntl.LOCK_EX)
        (folder / "dead").touch()  # a trial killed while it held its claims: its file, unlocked
        now = time.time()
        rows = [("held", "live", now), ("stored, held", "live", now), ("old", "live", now - 700)]
        rows += [("dead's", "dead", now), ("gone's", "gone", now)]  # "gone": its file removed already
        cache._db().executemany("INSERT INTO claims VALUES (?, ?, ?)", rows)
        cache._db().commit()
        keys = ["held", "stored, held", "stored", "old", "dead's", "gone's", "new 1", "new 2"]
        mine, stored = claims.take(keys, most=4)
        assert mine == ["old", "dead's", "gone's", "new 1"]
        assert stored == {"stored": (-1.0, -2.0)}
        assert claims.take(keys, most=4) == (["new 2"], {"stored": (-1.0, -2.0)})
        owners = dict(cache._db().execute("SELECT key, owner FROM claims"))
        assert {key for key, owner in owners.items() if owner == claims.owner} == {*mine, "new 2"}
        assert owners["held"] == "live" and not (folder / "dead").exists()
        claims.release(["held", *mine])  # only its own
        assert dict(cache._db().execute("SELECT key, owner FROM claims")) == {
            "held": "live",
            "stored, held": "live",
            "new 2": claims.owner,
        }
        os.close(live)
    assert dict(cache._db().execute("SELECT key, owner FROM claims")) == {"held": "live", "stored, held": "live"}


def test_a_trial_killed_while_it_waited_leaves_no_lock_file_for_long(tmp_path: Path) -> None:
    """A trial killed while waiting for others' pairs held no claim, so no one takes its lock file over: the next
    trial to fill the cache removes it once a minute old (a younger one may be a new trial's, not locked yet),
    and never a live trial's."""
    cache = RefCache.open(tmp_path, "same-reference")
    folder = tmp_path / "refcache" / sharing.CLAIMS_FOLDER
    folder.mkdir()
    for name in ("killed", "new", "live"):
        (folder / name).touch()
    for name in ("killed", "live"):
        os.utime(folder / name, (time.time() - 120,) * 2)
    live = os.open(folder / "live", os.O_RDWR)
    fcntl.flock(live, fcntl.LOCK_EX)
    with sharing.Claims(cache._db(), tmp_path / "refcache", refcache.stored_values) as claims:
        assert sorted(p.name for p in folder.iterdir()) == sorted(["new", "live", claims.owner])
    os.close(live)


_PREPARERS = """
import json, multiprocessing, sys, time
from pathlib import Path
from datasets import Dataset
from trl import DPOTrainer
from harness import models, tokcache, training

folder, model_path = Path(sys.argv[1]), sys.argv[2]
rows = json.loads((folder / "rows.json").read_text())
model, tokenizer = models.load(model_path)
config = training.dpo_config({"max_steps": 1}, folder / "out", 0, has_eval=False)
trainer = training.dpo_trainer(model, tokenizer, rows[:1], config)
settings = training.resolved_train_settings(config, list(tokcache.SETTINGS))
expected = DPOTrainer._prepare_dataset(trainer, Dataset.from_list(rows), tokenizer, config, "train").to_list()
training._TOKEN_CHUNK = 4
trls, prepared = DPOTrainer._prepare_dataset, []


def counted(self, dataset, processing_class, args, name):
    prepared.extend(dataset[training._KEY])  # the keys TRL prepares in this trial
    time.sleep(0.2)  # a chunk's chat template and tokenization, on a real set
    return trls(self, dataset, processing_class, args, name)


def trial(name, ready):
    DPOTrainer._prepare_dataset = counted
    trainer.token_cache = tokcache.open_for(folder / "study", tokenizer, settings)
    ready.wait()
    got = trainer._prepare_dataset(Dataset.from_list(rows), tokenizer, config, "train").to_list()
    (folder / f"{name}.json").write_text(json.dumps({"prepared": prepared, "same": got == expected}))


if __name__ == "__main__":
    fork = multiprocessing.get_context("fork")  # the model and TRL loaded once
    ready = fork.Barrier(3)
    trials = [fork.Process(target=trial, args=(str(n), ready), daemon=True) for n in range(3)]
    for t in trials:
        t.start()
    for t in trials:
        t.join(timeout=120)
    sys.exit(0 if all(t.exitcode == 0 for t in trials) else f"exit codes {[t.exitcode for t in trials]}")
"""


def test_trials_preparing_the_same_pairs_at_once_split_them(tmp_path: Path, real_shape_model_path: Path) -> None:
    """The first trials of a parallel study tokenize the same set at once: each pair goes through TRL's preparation
    in one of them (the set's first pair in each: it types the columns), and each gets TRL's own rows."""
    from collections import Counter

    from support import messy_pairs

    from harness import tokcache

    rows = messy_pairs("conversational") * 2  # repeated pairs, as a mix cycling a small source
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    env = os.environ | {"TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [sys.executable, "-c", _PREPARERS, str(tmp_path), str(real_shape_model_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    trials = [json.loads((tmp_path / f"{n}.json").read_text()) for n in range(3)]
    assert all(t["same"] for t in trials), "every trial gets TRL's own rows, in order"
    unique = len({json.dumps(row, sort_keys=True) for row in rows})
    counts = Counter(key for t in trials for key in t["prepared"])
    first = trials[0]["prepared"][0]
    assert all(t["prepared"][0] == first for t in trials)
    assert len(counts) == unique and counts[first] == 3 and set(counts.values()) == {1, 3}, "each pair once"
    assert sum(len(t["prepared"]) > 1 for t in trials) >= 2, "the preparation is shared"
    assert not list((tmp_path / "study" / tokcache.FOLDER / sharing.CLAIMS_FOLDER).iterdir())


def test_chunks_grow_to_the_seconds_asked_at_the_trials_own_pace(tmp_path: Path, monkeypatch) -> None:
    """A compute with a fixed cost per call (TRL's preparation hashes the tokenizer first: ~1 s for a real
    vocabulary) is called rarely: after the first chunk, each is what the trial computes in about `seconds` at
    its pace so far. Here 1 s a call and 0.01 s a pair, 3 s asked."""
    from types import SimpleNamespace

    clock = [0.0]
    monkeypatch.setattr(sharing, "time", SimpleNamespace(monotonic=lambda: clock[0], time=time.time, sleep=time.sleep))
    cache = RefCache.open(tmp_path, "same-reference")
    sizes: list[int] = []

    def compute(keys: list[str]) -> dict[str, tuple[float, float]]:
        sizes.append(len(keys))
        clock[0] += 1.0 + 0.01 * len(keys)
        fresh = dict.fromkeys(keys, (-1.0, -2.0))
        cache.put(fresh)
        return fresh

    keys = [f"pair {n}" for n in range(100)]
    found = sharing.share(cache._db(), tmp_path / "refcache", keys, compute, refcache.stored_values, 4, seconds=3.0)
    assert sizes == [4, 12, 32, 52] and found == dict.fromkeys(keys, (-1.0, -2.0))
    sizes.clear()
    more = [f"pair {n}" for n in range(100, 120)]
    sharing.share(cache._db(), tmp_path / "refcache", more, compute, refcache.stored_values, 4)
    assert sizes == [4] * 5, "without seconds, chunks stay as asked (the reference pass: 1,024 pairs)"

    # another live trial holds the last 10 of this trial's keys, and stores them during its second chunk: while it
    # lives (between its chunks too), no chunk past half of what neither has claimed
    sizes.clear()
    other = os.open(tmp_path / "refcache" / sharing.CLAIMS_FOLDER / "other", os.O_RDWR | os.O_CREAT)
    fcntl.flock(other, fcntl.LOCK_EX)
    keys = [f"pair {n}" for n in range(200, 300)]
    cache._db().executemany("INSERT INTO claims VALUES (?, 'other', ?)", [(k, time.time()) for k in keys[-10:]])
    cache._db().commit()

    def beside(keys_now: list[str]) -> dict[str, tuple[float, float]]:
        if len(sizes) == 1:  # this trial's second chunk: the other trial stores its pairs meanwhile
            cache.put(dict.fromkeys(keys[-10:], (-1.0, -2.0)))
            with cache._db() as db:
                db.execute("DELETE FROM claims WHERE owner = 'other'")
        return compute(keys_now)

    found = sharing.share(cache._db(), tmp_path / "refcache", keys, beside, refcache.stored_values, 4, seconds=30.0)
    os.close(other)
    assert sizes == [4, 43, 22, 16, 5] and found == dict.fromkeys(keys, (-1.0, -2.0))
    sizes.clear()
    sharing.share(
        cache._db(),
        tmp_path / "refcache",
        [f"pair {n}" for n in range(300, 400)],
        compute,
        refcache.stored_values,
        4,
        seconds=30.0,
    )
    assert sizes == [4, 96], "alone, the second chunk takes all that is left"
