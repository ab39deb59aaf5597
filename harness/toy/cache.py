"""Cache the built toy model under a hash of its recipe; build at most once, even with concurrent callers."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from harness.toy import build

# The files whose content decides the model; editing any of them yields a new cache folder.
RECIPE_FILES = ("corpus.py", "build.py")
DONE_MARKER = build.DONE_MARKER  # written last by the build, so its presence means complete

logger = logging.getLogger(__name__)


def recipe_hash() -> str:
    digest = hashlib.sha256(json.dumps(build.RECIPE, sort_keys=True).encode())
    for name in RECIPE_FILES:
        digest.update((Path(__file__).parent / name).read_bytes())
    return digest.hexdigest()[:12]


def ensure_toy_model(
    cache_dir: Path, log: Callable[[str], None] | None = None, announce: Callable[[str], None] | None = None
) -> Path:
    """Build the toy model once into cache_dir/toy-<recipe hash>/ and return that folder.

    The build runs in a temporary sibling folder renamed into place when complete, under an
    exclusive file lock, so a concurrent caller waits and then reuses the finished folder.
    """
    log = log or logger.info
    announce = announce or log
    cache_dir = Path(cache_dir)
    folder = cache_dir / f"toy-{recipe_hash()}"
    if (folder / DONE_MARKER).is_file():
        return folder
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / f"{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (folder / DONE_MARKER).is_file():  # another process built it while we waited
            return folder
        for stale in cache_dir.glob(f".{folder.name}-*"):  # left by a killed build; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        announce(f"building the toy model into {folder} (once per recipe, about a minute)")
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=cache_dir))
        try:
            _build_isolated(tmp, log)
            shutil.rmtree(folder, ignore_errors=True)  # a leftover without the marker is incomplete
            os.rename(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _build_isolated(folder: Path, log: Callable[[str], None]) -> None:
    """Build without disturbing the caller's torch RNG or thread count."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(build.RECIPE["threads"])
        with torch.random.fork_rng(devices=[]):
            build.build_into(folder, dict(build.RECIPE), log)
    finally:
        torch.set_num_threads(threads)
