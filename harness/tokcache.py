"""The study's tokenized pairs: each pair as TRL prepared it for training, computed once per study.

TRL's DPOTrainer prepares every dataset it is given (prompt extraction, EOS for plain text, the chat template,
tokenization one pair at a time, and dropping pairs whose prompt alone fills max_length): for HH-RLHF-sized pairs
about 4 ms a pair on one core, so a 10,000-pair trial spends ~40 s before its first step, and every trial of a
study does it again for (mostly) the same pairs. This cache keeps TRL's prepared row of each pair; harness.training
hands TRL only the pairs no earlier trial prepared, and puts the rest back in order.

A pair's key hashes the pair as given (every field of its row) and what TRL's preparation depends on: the
tokenizer (harness.refcache.tokenizer_fingerprint: vocabulary, special tokens, chat template, pipeline), the
versions of TRL and of the libraries rendering and tokenizing (LIBRARIES), TRL's settings that shape the prepared
rows (max_length and truncation_mode, which drop pairs), and today's date for a template that renders it. A pair
TRL dropped is kept as dropped. Storage: outputs/<study>/tokcache/tokcache.db, SQLite in WAL mode like the
reference cache; rows are only ever added. Trials preparing the same pairs at once (a parallel study's first
trials) split them, as they split the reference pass (harness.sharing).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import sqlite3
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness import sharing
from harness.refcache import StudyCache, select, tokenizer_fingerprint

FOLDER = "tokcache"
SETTINGS = ("max_length", "truncation_mode")  # DPOConfig fields TRL's dataset preparation reads
LIBRARIES = ("trl", "transformers", "tokenizers", "jinja2")  # whose versions shape a prepared row
DROPPED = b""  # the value of a pair TRL dropped
# each call of TRL's preparation costs about a second before its first pair (datasets hashes the tokenizer, a real
# vocabulary's 150k tokens, to fingerprint its map): chunks of this many seconds keep that a few percent
CHUNK_SECONDS = 30.0


def open_for(study_dir: Path, tokenizer: Any, settings: dict[str, Any], fingerprint: str | None = None) -> TokenCache:
    """The study's cache keyed for one trial's tokenizer and TRL's `settings` (SETTINGS of its DPOConfig);
    `fingerprint`: the tokenizer's tokenizer_fingerprint, when the caller has it."""
    from importlib.metadata import version

    tokens = fingerprint or tokenizer_fingerprint(tokenizer)
    payload = {
        "tokenizer": tokens,
        "libraries": {name: version(name) for name in LIBRARIES},
        "settings": settings,
        # a template that renders today's date (Llama 3's strftime_now) tokenizes differently tomorrow
        "date": datetime.date.today().isoformat() if "strftime_now" in str(tokenizer.chat_template) else None,
    }
    folder = Path(study_dir) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    return TokenCache(folder / "tokcache.db", hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest())


class TokenCache(StudyCache):
    """The prepared pairs: keys under this trial's tokenizer, libraries and settings."""

    TABLE = "prepared (key TEXT PRIMARY KEY, prepared BLOB NOT NULL)"

    def key(self, row: dict[str, Any]) -> str:
        """A pair's key: the row as given to TRL (all its fields), under this cache's identity."""
        text = json.dumps(row, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(f"{self.identity}|{text}".encode()).hexdigest()

    def present(self, keys: Sequence[str]) -> set[str]:
        """Those of `keys` the cache holds; counts hits and misses."""
        found = _present(self._db(), list(keys)).keys()
        self.hits += sum(key in found for key in keys)
        self.misses += sum(key not in found for key in keys)
        return set(found)

    def fill(
        self,
        missing: list[str],
        prepare: Callable[[list[str]], None],
        chunk: int,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        """Have every one of the `missing` keys stored: prepare(keys) prepares and stores those this trial claims,
        `chunk` at first, then about CHUNK_SECONDS' worth at a time; trials filling the cache at once (a parallel
        study's first trials) split them (harness.sharing). progress(done, total) as the count of pairs stored
        (here or by others) moves."""

        def prepared(keys: list[str]) -> dict[str, None]:
            prepare(keys)
            return dict.fromkeys(keys)

        sharing.share(self._db(), self.path.parent, missing, prepared, _present, chunk, progress, CHUNK_SECONDS)

    def rows(self, keys: Sequence[str]) -> dict[str, dict | None]:
        """The prepared rows of those keys the cache holds (None: TRL dropped the pair)."""
        return {key: _decode(value) for key, value in select(self._db(), "key, prepared", "prepared", list(keys))}

    def put(self, values: dict[str, dict | None]) -> None:
        """Add freshly prepared rows (None: dropped); one transaction, a row already there is kept."""
        with self._db() as db:
            db.executemany(
                "INSERT OR IGNORE INTO prepared (key, prepared) VALUES (?, ?)",
                [(key, _encode(row)) for key, row in values.items()],
            )

    def metrics(self) -> dict[str, float]:
        return {"tokcache.hits": self.hits, "tokcache.misses": self.misses}


def _present(conn: sqlite3.Connection, keys: list[str]) -> dict[str, None]:
    """Those of `keys` stored (their rows are not read: a prepared row is big)."""
    return {key: None for (key,) in select(conn, "key", "prepared", keys)}


def _encode(row: dict | None) -> bytes:
    return DROPPED if row is None else zlib.compress(json.dumps(row, separators=(",", ":")).encode(), 1)


def _decode(value: bytes) -> dict | None:
    return None if value == DROPPED else json.loads(zlib.decompress(value))
