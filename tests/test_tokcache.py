"""The study's tokenized pairs: a trial's datasets come back exactly as TRL prepares them, whatever the cache
held before (nothing, some of the pairs, all of them), and the cache misses when the tokenizer or TRL's settings
change. On the real-vocabulary fixture (byte-level BPE, ChatML, special tokens) with messy and HH-shaped pairs.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest
from datasets import Dataset
from support import TEXTS, messy_pairs
from trl import DPOTrainer

from harness import tokcache, training


@pytest.fixture(scope="module")
def trainer(real_shape_model, tmp_path_factory) -> DPOTrainer:
    """The harness's DPOTrainer on the real-vocabulary model; its `_prepare_dataset` is what is tested."""
    model, tokenizer = real_shape_model
    folder = tmp_path_factory.mktemp("trainer")
    config = training.dpo_config({"max_steps": 1, "per_device_train_batch_size": 2}, folder, 0, has_eval=False)
    return training.dpo_trainer(model, tokenizer, messy_pairs("conversational")[:1], config)


def prepare(trainer: DPOTrainer, rows: list[dict], config, cache: tokcache.TokenCache | None) -> Dataset:
    trainer.token_cache = cache
    if cache is None:  # TRL's own preparation
        return DPOTrainer._prepare_dataset(trainer, Dataset.from_list(rows), trainer.processing_class, config, "train")
    return trainer._prepare_dataset(Dataset.from_list(rows), trainer.processing_class, config, "train")


def assert_progress(said: list[str], head: str, new: int) -> None:
    """What the sweep's live bar showed while TRL prepared `new` pairs in chunks of 4: where it stands, with the
    time left between the first and the last; then forgets it (for the next preparation)."""
    assert said[0] == f"{head}: 0/{new} prepared" and said[-1] == f"{head}: {new}/{new} prepared"
    assert len(said) > 2 and all(text.startswith(head) and text.endswith(" left") for text in said[1:-1]), said
    said.clear()


@pytest.mark.parametrize("max_length", [None, 40], ids=["whole", "max_length 40"])
@pytest.mark.parametrize("kind", ["conversational", "plain"])
def test_a_trials_pairs_come_back_as_trl_prepares_them(
    trainer, tmp_path: Path, kind: str, max_length, monkeypatch
) -> None:
    monkeypatch.setattr(training, "_CHUNK", 4)  # rows go to and from the cache in several chunks
    monkeypatch.setattr(training, "_TOKEN_CHUNK", 4)  # and TRL prepares the new pairs in several
    config = training.dpo_config(
        {"max_steps": 1, "max_length": max_length, "truncation_mode": "keep_start"}, tmp_path, 0, has_eval=False
    )
    rows = messy_pairs(kind)
    settings = training.resolved_train_settings(config, list(tokcache.SETTINGS))
    cache = tokcache.open_for(tmp_path, trainer.processing_class, settings)
    said: list[str] = []  # what the sweep's live bar shows while TRL prepares the new pairs
    monkeypatch.setattr(trainer, "on_status", said.append)
    first = rows[::2]
    assert prepare(trainer, first, config, cache).to_list() == prepare(trainer, first, config, None).to_list()
    assert (cache.hits, cache.misses) == (0, len(first))
    assert_progress(said, "preparing the train pairs (chat template, tokens)", len(first))

    later = rows + rows[:3]  # another trial: new pairs, the first one's, repeats (a mix cycling a small source)
    random.Random(0).shuffle(later)
    cache = tokcache.open_for(tmp_path, trainer.processing_class, settings)
    got, expected = prepare(trainer, later, config, cache), prepare(trainer, later, config, None)
    assert got.to_list() == expected.to_list() and got.features == expected.features
    assert cache.hits == sum(r in first for r in later) and cache.misses == len(later) - cache.hits
    head = f"preparing the train pairs (chat template, tokens; {cache.hits} from the token cache)"
    assert_progress(said, head, len(rows) - len(first))
    dropped = len(later) - len(expected)
    assert (dropped > 0) == (max_length is not None), "keep_start drops pairs whose prompt fills max_length"

    cache = tokcache.open_for(tmp_path, trainer.processing_class, settings)
    assert prepare(trainer, later, config, cache).to_list() == expected.to_list()
    assert (cache.hits, cache.misses) == (len(later), 0), "dropped pairs are remembered as dropped"
    assert not said, "nothing to prepare, nothing said"


def test_a_changed_tokenizer_template_or_max_length_misses(real_shape_model, tmp_path: Path) -> None:
    import copy

    _, tokenizer = real_shape_model
    row = messy_pairs("conversational")[0]
    settings = {"max_length": 512, "truncation_mode": "keep_start"}
    tokcache.open_for(tmp_path, tokenizer, settings).put(
        {tokcache.open_for(tmp_path, tokenizer, settings).key(row): None}
    )

    def found(tok, **changed) -> bool:
        cache = tokcache.open_for(tmp_path, tok, settings | changed)
        return bool(cache.present([cache.key(row)]))

    assert found(tokenizer)
    assert not found(tokenizer, max_length=1024)
    assert not found(tokenizer, truncation_mode="keep_end")
    other = copy.deepcopy(tokenizer)
    other.chat_template = tokenizer.chat_template.replace("<|im_start|>", "<|im_start|> ")
    assert not found(other)
    other = copy.deepcopy(tokenizer)
    other.backend_tokenizer.normalizer = __import__("tokenizers").normalizers.Lowercase()  # same vocabulary
    assert not found(other)


def test_a_cache_that_cannot_be_written_leaves_the_work_to_trl(trainer, tmp_path: Path) -> None:
    """A full disk or a read-only folder must not fail the trial: TRL prepares every pair itself."""
    config = training.dpo_config({"max_steps": 1}, tmp_path, 0, has_eval=False)
    rows = messy_pairs("conversational")
    unusable = tokcache.TokenCache(tmp_path, "x")  # a folder where the database file should be
    assert prepare(trainer, rows, config, unusable).to_list() == prepare(trainer, rows, config, None).to_list()


@pytest.mark.parametrize("failure", ["disk full midway", "key lost by TRL"])
def test_a_cache_failing_midway_leaves_the_work_to_trl(trainer, tmp_path: Path, monkeypatch, failure: str) -> None:
    """A store failing after some chunks were stored (a disk filling up), or TRL's preparation losing the pairs'
    keys (a TRL change): TRL prepares every pair itself, and no claim nor lock file is left behind."""
    monkeypatch.setattr(training, "_TOKEN_CHUNK", 4)
    config = training.dpo_config({"max_steps": 1}, tmp_path, 0, has_eval=False)
    rows = messy_pairs("conversational")
    expected = prepare(trainer, rows, config, None)
    cache = tokcache.open_for(tmp_path, trainer.processing_class, {})
    if failure == "disk full midway":
        puts, put = [], tokcache.TokenCache.put

        def filling(self: tokcache.TokenCache, values: dict) -> None:
            puts.append(len(values))
            if len(puts) == 4:  # the first row, a chunk (rows, dropped), then a full disk
                raise sqlite3.OperationalError("database or disk is full")
            put(self, values)

        monkeypatch.setattr(tokcache.TokenCache, "put", filling)
    else:
        trls = DPOTrainer._prepare_dataset

        def keyless(self: DPOTrainer, dataset: Dataset, *args) -> Dataset:  # noqa: ANN002
            if len(dataset) > 1 and training._KEY in dataset.column_names:  # the first row's call keeps it
                dataset = dataset.remove_columns(training._KEY)
            return trls(self, dataset, *args)

        monkeypatch.setattr(DPOTrainer, "_prepare_dataset", keyless)
    got = prepare(trainer, rows, config, cache)
    assert got.to_list() == expected.to_list() and got.features == expected.features
    assert cache._db().execute("SELECT count(*) FROM claims").fetchone() == (0,)
    assert not list((tmp_path / tokcache.FOLDER / "claims").iterdir())


def awkward(case: str) -> list[dict]:
    """Sets whose first row, or one part of the set, alone would type a column otherwise than the whole set does."""
    if case == "empty first prompt":  # plain text, a tokenizer without BOS: the first row's prompt_ids are []
        return [{"prompt": "", "chosen": "hello there", "rejected": "bye"}, *messy_pairs("plain")[:5]]
    rows = messy_pairs("conversational")[:10]
    at = 0 if case == "a message's key in the first row only" else 9
    rows[at] = rows[at] | {"prompt": [m | {"name": "Ann"} for m in rows[at]["prompt"]]}  # ShareGPT's "name"
    return rows


@pytest.mark.parametrize(
    "case", ["empty first prompt", "a message's key in the first row only", "a message's key in a later part only"]
)
def test_a_set_comes_back_typed_as_trl_types_it(trainer, tmp_path: Path, monkeypatch, case: str) -> None:
    """The set's types are its own, whatever its first row or a part of it says alone; from the cache, without
    a second preparation (a fallback to TRL's whole pass would hide a cache that never serves)."""
    monkeypatch.setattr(training, "_CHUNK", 4)  # rows come back in parts of 4
    config = training.dpo_config({"max_steps": 1}, tmp_path, 0, has_eval=False)
    rows = awkward(case)
    expected = prepare(trainer, rows, config, None)
    calls, trls = [], DPOTrainer._prepare_dataset

    def counted(self: DPOTrainer, dataset: Dataset, *args) -> Dataset:  # noqa: ANN002
        calls.append(len(dataset))
        return trls(self, dataset, *args)

    monkeypatch.setattr(DPOTrainer, "_prepare_dataset", counted)
    for _ in range(2):  # the study's first trial, then a later one
        got = prepare(trainer, rows, config, tokcache.open_for(tmp_path, trainer.processing_class, {}))
        assert got.to_list() == expected.to_list() and got.features == expected.features
    assert calls == [1, len(rows) - 1, 1], "the first row types (and fills) the set; no fallback to TRL's whole pass"


def test_a_template_that_renders_the_date_is_keyed_by_the_day(real_shape_model, tmp_path: Path, monkeypatch) -> None:
    """Llama 3's template writes today's date into the system turn: a pair prepared yesterday is not today's."""
    import copy
    import datetime
    from types import SimpleNamespace

    _, tokenizer = real_shape_model
    dated = copy.deepcopy(tokenizer)
    dated.chat_template = "Today: {{ strftime_now('%d %b %Y') }}\n" + tokenizer.chat_template
    settings = {"max_length": 512, "truncation_mode": "keep_start"}

    def identity(tok, day: int) -> str:
        today = SimpleNamespace(today=lambda: datetime.date(2026, 12, day))
        monkeypatch.setattr(tokcache, "datetime", SimpleNamespace(date=today))
        return tokcache.open_for(tmp_path, tok, settings).identity

    assert identity(dated, 1) != identity(dated, 2)
    assert identity(tokenizer, 1) == identity(tokenizer, 2)


def test_the_tokenizer_fingerprint_ignores_padding_left_by_a_call(real_shape_model) -> None:
    import copy

    from harness.refcache import tokenizer_fingerprint

    _, tokenizer = real_shape_model
    used = copy.deepcopy(tokenizer)
    before = tokenizer_fingerprint(used)
    used(["a", "a longer text"], padding=True, truncation=True, max_length=8)  # sets the backend's padding
    assert tokenizer_fingerprint(used) == before


def test_a_chunk_whose_pairs_trl_drops_whole_adds_nothing(trainer, tmp_path: Path, monkeypatch) -> None:
    """The last chunk holds one pair, whose prompt alone fills max_length: TRL drops it, the rest come back."""
    from harness.scoring.lm import prompt_ids

    monkeypatch.setattr(training, "_CHUNK", 4)
    rows = messy_pairs("conversational")
    rows = [rows[i] for i in (0, 1, 2, 3, TEXTS.index("x " * 40))]
    lengths = [len(prompt_ids(trainer.processing_class, r["prompt"])) for r in rows]
    assert lengths[-1] > max(lengths[:4]) + 2
    config = training.dpo_config({"max_steps": 1, "max_length": max(lengths[:4]) + 2}, tmp_path, 0, has_eval=False)
    settings = training.resolved_train_settings(config, list(tokcache.SETTINGS))
    expected = prepare(trainer, rows, config, None)
    assert len(expected) == 4, "the long prompt is dropped"
    for _ in range(2):  # cold, then warm
        got = prepare(trainer, rows, config, tokcache.open_for(tmp_path, trainer.processing_class, settings))
        assert got.to_list() == expected.to_list() and got.features == expected.features
    only_dropped = prepare(trainer, rows[-1:], config, tokcache.open_for(tmp_path, trainer.processing_class, settings))
    assert len(only_dropped) == 0 and only_dropped.features == expected.features
