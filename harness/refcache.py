"""The study's reference log-prob cache: each pair's reference log-probs, computed once per study.

Every trial of a study scores its pairs against the same frozen reference model, whatever its mix, β,
learning rate, seed or loss type, so the reference forward pass is done once per pair and kept here.
The values themselves are TRL's (harness.training lets DPOTrainer precompute the missing pairs and
harvests its columns); this module deals in keys, rows and files.

A pair's key hashes everything its reference log-probs depend on:
  - the reference model: name or path, revision, a fingerprint of its weights, the training precision;
  - the tokenizer: vocabulary, special tokens and chat template;
  - TRL's settings that shape the reference forward (max_length, truncation_mode, ld_alpha, ...);
  - the pair as TRL tokenized it (prompt, chosen and rejected token ids, after the chat template and
    TRL's own EOS handling): the exact input of the reference forward.

Storage: one SQLite file per study folder (outputs/<study>/refcache/refcache.db) in WAL mode; rows are
only ever added (INSERT OR IGNORE: a pair stored twice keeps the first value, which equals the second), so
the trial processes of `--parallel N` / `--devices` can read and write at once. Trials that lack the same
pairs at once (a parallel study's first trials) split them (harness.sharing): each pair is computed by one of them.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from harness import sharing

FOLDER = "refcache"
_CHUNK = 500  # keys per SELECT: below SQLite's bound-parameter limit
CHUNK = 1024  # pairs computed and stored together: a pass killed midway loses at most these; trials split them


def enabled(ref_cache: bool, train: dict[str, Any]) -> bool:
    """The cache is on when the spec allows it and the trial's TRL settings have a fixed, precomputable reference."""
    return ref_cache and not conflicts(train)


def conflicts(train: dict[str, Any]) -> list[str]:
    """Why `model.ref_cache: true` cannot hold with these `train` settings (empty when it can)."""
    problems = []
    if train.get("sync_ref_model"):
        problems.append("train.sync_ref_model updates the reference during training, so its log-probs cannot be kept")
    if train.get("precompute_ref_log_probs") is False:
        problems.append("train.precompute_ref_log_probs: false asks TRL to recompute the reference at every step")
    return problems


SAMPLED_VALUES = 65_536  # per tensor: an 8B model's fingerprint reads ~20M values, not 16 GB


def weights_fingerprint(model: Any) -> str:
    """A hash of the model's weights: name, dtype and shape of every tensor and an evenly strided sample
    of its values (all of them for tensors up to SAMPLED_VALUES); call it on the base model, before any
    adapter. Sampled because hashing every byte costs a real model tens of seconds per trial (a copy to
    the host and SHA-256 of 16 GB for 8B), while two checkpoints that differ at all (a fine-tune moves
    nearly every weight) differ in the sample."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // SAMPLED_VALUES)].cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(sample.view(torch.uint8).numpy().tobytes() if sample.numel() else b"")
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of what decides the token ids: vocabulary (added tokens included), special tokens, chat template, and
    for a fast tokenizer its whole pipeline (normalizer, pre-tokenizer, merges, post-processor)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    payload = {
        "class": type(tokenizer).__name__,
        "vocab": sorted(tokenizer.get_vocab().items()),
        "special": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
        "chat_template": tokenizer.chat_template,
        "pipeline": _pipeline_hash(backend) if backend is not None else None,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _pipeline_hash(backend: Any) -> str:
    """A fast tokenizer's pipeline, without the padding and truncation a call with padding=True leaves set."""
    pipeline = json.loads(backend.to_str())
    pipeline.pop("padding", None)
    pipeline.pop("truncation", None)
    return hashlib.sha256(json.dumps(pipeline, sort_keys=True).encode()).hexdigest()


def identity(model: dict[str, Any], tokenizer: str, settings: dict[str, Any]) -> str:
    """The reference's identity: model (name, revision, weights, precision), tokenizer fingerprint, TRL settings."""
    payload = {"model": model, "tokenizer": tokenizer, "settings": settings}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def open_for(
    study_dir: Path,
    model: Any,
    tokenizer: Any,
    reference: dict[str, Any],
    settings: dict[str, Any],
    fingerprint: str | None = None,
) -> RefCache:
    """The study's cache keyed for one trial's reference: `model` as loaded (before any adapter), its tokenizer,
    `reference` naming it (name, path, revision, precision) and TRL's `settings` (training.REFERENCE_SETTINGS);
    `fingerprint`: the tokenizer's tokenizer_fingerprint, when the caller has it (a real vocabulary's takes ~0.4 s)."""
    started = time.perf_counter()
    reference = reference | {"weights": weights_fingerprint(model)}
    tokens = fingerprint or tokenizer_fingerprint(tokenizer)
    cache = RefCache.open(study_dir, identity(reference, tokens, settings))
    cache.seconds = time.perf_counter() - started  # fingerprinting the weights is part of the cache's cost
    return cache


@dataclass
class StudyCache:
    """A study's cache seen from one trial: its SQLite file (connected on first use, one table: TABLE), the keys'
    identity (what this trial's values depend on) and the trial's hits and misses."""

    TABLE: ClassVar[str]
    path: Path
    identity: str
    hits: int = 0
    misses: int = 0
    _conn: sqlite3.Connection | None = field(default=None, repr=False, kw_only=True)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = connect(self.path, self.TABLE)
        return self._conn


_WAIT_S = 120  # generous: another trial may hold the write lock while it stores


def connect(path: Path, table: str) -> sqlite3.Connection:
    """A study cache's SQLite file, in WAL mode (trial processes read and write at once), with its `table`."""
    conn = sqlite3.connect(path, timeout=_WAIT_S)
    deadline = time.monotonic() + _WAIT_S
    while True:
        try:  # SQLite answers "locked" at once, without its busy wait, while another process turns a new file to WAL
            conn.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                conn.close()
                raise
            time.sleep(0.01)
    conn.execute(f"CREATE TABLE IF NOT EXISTS {table}")
    return conn


def select(conn: sqlite3.Connection, columns: str, table: str, keys: list[str]) -> Iterator[tuple]:
    """The rows of `table` whose key is one of `keys`, in chunks below SQLite's bound-parameter limit."""
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        yield from conn.execute(f"SELECT {columns} FROM {table} WHERE key IN ({','.join('?' * len(chunk))})", chunk)


@dataclass
class RefCache(StudyCache):
    """The reference log-probs: keys under this trial's reference identity."""

    TABLE = "logps (key TEXT PRIMARY KEY, chosen REAL NOT NULL, rejected REAL NOT NULL)"
    seconds: float = 0.0  # spent looking up, computing (by TRL) and storing reference log-probs

    @classmethod
    def open(cls, study_dir: Path, identity: str) -> RefCache:
        folder = Path(study_dir) / FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        return cls(folder / "refcache.db", identity)

    def for_scoring(self) -> RefCache:
        """The same file keyed apart, for harness.scoring's own reference log-probs (its tokenization and
        forward pass, not TRL's): a probe then compares policy and reference computed the same way."""
        return RefCache(self.path, f"{self.identity}|scoring")

    def key(self, *token_ids: Sequence[int]) -> str:
        """A pair's key from its token ids: TRL's (prompt, chosen, rejected), or whatever a scorer feeds the model."""
        ids = json.dumps([list(part) for part in token_ids], separators=(",", ":"))
        return hashlib.sha256(f"{self.identity}|{ids}".encode()).hexdigest()

    def fill(
        self,
        keys: Sequence[str],
        compute: Callable[[list[int]], tuple[Sequence[float], Sequence[float]]],
        chunk: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[list[float], list[float]]:
        """The (chosen, rejected) reference log-probs of every key: cached ones, and for the rest
        compute(their indices), which are stored for the next trial; `chunk` (default CHUNK) indices at a time, each
        chunk stored once computed, so that a trial killed during a long pass leaves the next what it finished.
        Trials filling the cache at once (the first trials of `--parallel`/`--devices`) share the work: each
        claims the missing pairs it computes (harness.sharing), and waits for those another live trial is computing.
        progress(computed, missing) is called whenever the count of pairs computed (here or by others) moves."""
        known = self.get(keys)
        missing: dict[str, int] = {}  # key -> its first index, in the caller's order (a key may repeat)
        for i, key in enumerate(keys):
            if key not in known:
                missing.setdefault(key, i)
        if missing:  # (a study's later trials lack none: no claims, no lock file)
            known |= self._compute(missing, compute, chunk or CHUNK, progress)
        return [known[key][0] for key in keys], [known[key][1] for key in keys]

    def _compute(
        self,
        missing: dict[str, int],
        compute: Callable[[list[int]], tuple[Sequence[float], Sequence[float]]],
        chunk: int,
        progress: Callable[[int, int], None] | None,
    ) -> dict[str, tuple[float, float]]:
        """The missing pairs' values: those this trial claims, computed and stored a chunk at a time, and those
        other trials store meanwhile (harness.sharing)."""

        def computed(keys: list[str]) -> dict[str, tuple[float, float]]:
            chosen, rejected = compute([missing[key] for key in keys])
            fresh = dict(zip(keys, zip(chosen, rejected, strict=True), strict=True))
            self.put(fresh)  # (a NaN is not stored, but it is this trial's value: TRL stops on it)
            return fresh

        return sharing.share(self._db(), self.path.parent, list(missing), computed, stored_values, chunk, progress)

    def get(self, keys: Iterable[str]) -> dict[str, tuple[float, float]]:
        """The cached (chosen, rejected) reference log-probs of those keys that are present; counts hits and misses."""
        keys = list(keys)
        found = stored_values(self._db(), keys)
        self.hits += sum(key in found for key in keys)
        self.misses += sum(key not in found for key in keys)
        return found

    def put(self, values: dict[str, tuple[float, float]]) -> None:
        """Add freshly computed pairs (one transaction; a pair already there is kept)."""
        with self._db() as db:
            db.executemany(
                "INSERT OR IGNORE INTO logps (key, chosen, rejected) VALUES (?, ?, ?)",
                [(key, float(chosen), float(rejected)) for key, (chosen, rejected) in values.items()],
            )

    def metrics(self) -> dict[str, float]:
        return {"refcache.hits": self.hits, "refcache.misses": self.misses, "time.ref_s": self.seconds}


def stored_values(conn: sqlite3.Connection, keys: list[str]) -> dict[str, tuple[float, float]]:
    """The (chosen, rejected) values of those of `keys` that are stored."""
    return {key: (chosen, rejected) for key, chosen, rejected in select(conn, "key, chosen, rejected", "logps", keys)}
