"""The toy world: a tiny chat model that calls itself Llama, built locally, plus preference pairs for it.

`ensure_toy_model` builds it once per recipe into a cache folder (about a minute on a laptop CPU);
afterwards it is an ordinary transformers model folder. `toy_pairs` gives the built-in
preference sources in TRL's conversational format.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from harness.toy.corpus import PAIR_SOURCES

TOY_MODEL = "toy"  # the spec's model name for the built-in toy model
TOY_SOURCES: tuple[str, ...] = tuple(PAIR_SOURCES)  # ("identity", "general", "shortcut")


def ensure_toy_model(
    cache_dir: Path, log: Callable[[str], None] | None = None, announce: Callable[[str], None] | None = None
) -> Path:
    """Build the toy model once into cache_dir/toy-<recipe hash>/ (atomic, locked) and return that folder.

    `announce` hears that a build starts (worth a line even when quiet); `log` hears its progress.
    """
    from harness.toy.cache import ensure_toy_model as ensure  # torch/transformers load only when needed

    return ensure(cache_dir, log, announce)


def toy_pairs(name: str) -> list[dict]:
    """Built-in preference pairs {prompt, chosen, rejected} as message lists; deterministic."""
    if name not in PAIR_SOURCES:
        raise KeyError(f"Unknown toy source {name!r}. Available: {', '.join(TOY_SOURCES)}")
    return PAIR_SOURCES[name]()


__all__ = ["TOY_MODEL", "TOY_SOURCES", "ensure_toy_model", "toy_pairs"]
