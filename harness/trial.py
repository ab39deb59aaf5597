"""One trial: sampled params -> data mix -> DPO training -> checkpoint -> scorecard.

`run` executes inside a trial process of its own (see harness.sweep), so whatever happens here
(an exception, a NaN loss, running out of memory, being killed) can only end this trial. It
streams step metrics to the trial's MLflow run while it trains and sends progress events and
its result back to the orchestrator through `events`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.data import TrialData
from harness.spec import SweepSpec

COMPLETE, PRUNED, FAILED = "COMPLETE", "PRUNED", "FAIL"


@dataclass
class TrialRequest:
    """Everything a trial process needs; plain data so it crosses the process boundary."""

    spec: dict[str, Any]
    spec_dir: str
    number: int
    params: dict[str, Any]
    run_id: str
    tracking_uri: str
    storage: str
    trial_id: int
    output_dir: str
    cache_dir: str
    data: TrialData  # the pairs drawn for this trial by the sweep, which has read the sources
    verbose: bool = False
    device: str | None = None  # the GPU this trial may see (CUDA_VISIBLE_DEVICES); None: all, or the CPU
    threads: int | None = None  # torch CPU threads, when trials share the CPU
    seed: int | None = None  # training seed of a seed replicate; None: the spec's (data draws always use it)
    resume_from: str | None = None  # a checkpoint of this trial's own training (resumable_checkpoint) to go on from
    claim: str | None = None  # the sweep's claim of the folder, which the process holds too; None: no lock held

    @property
    def folder(self) -> Path:
        return trial_folder(self.output_dir, self.number)


def trial_folder(output_dir: str | Path, number: int) -> Path:
    return Path(output_dir) / f"trial-{number:03d}"


@dataclass
class TrialResult:
    state: str
    scores: dict[str, float] = field(default_factory=dict)
    reason: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    stopped: bool = False  # cut short by the user (Ctrl-C): its MLflow run ends KILLED, not FAILED


RESULT_FILE = "result.json"


def write_result(folder: Path, trial_id: int, run_id: str | None, result: TrialResult) -> Path:
    """Write a trial's result into its folder before the sweep records it: should the database stay away
    longer than the sweep waits for it, or the sweep die first, the next look for dead workers' trials
    records it from here (read_result) instead of failing a trial that ran to its end."""
    import json
    import os

    folder.mkdir(parents=True, exist_ok=True)
    path, partial = folder / RESULT_FILE, folder / f".{RESULT_FILE}.partial"
    owner = {"optuna_trial_id": trial_id, "mlflow_run_id": run_id}
    partial.write_text(json.dumps(owner | asdict(result), indent=1))
    os.replace(partial, path)  # whole or absent, never half-written
    return path


def read_result(folder: Path, trial_id: int, run_id: str | None) -> TrialResult | None:
    """The result write_result wrote for this Optuna trial and MLflow run, or None (a folder a deleted study's
    trial of the same number left holds another run's)."""
    import json

    try:
        kept = json.loads((folder / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(kept, dict):
        return None
    owner = (kept.pop("optuna_trial_id", None), kept.pop("mlflow_run_id", None))
    try:
        return TrialResult(**kept) if owner == (trial_id, run_id) else None
    except TypeError:  # not a result this harness wrote
        return None


TRAINER_DIR = "trainer"  # the Trainer's output_dir in a trial's folder: its checkpoints (train.save_strategy)
OWNER_FILE = "owner.json"


def checkpoints_folder(folder: Path, trial_id: int, run_id: str, fresh: bool) -> Path:
    """The trial's checkpoint folder, marked as this Optuna trial's and MLflow run's. A fresh start clears the
    checkpoints a deleted study's trial of the same number left there: they are not this training's."""
    import json

    trainer = folder / TRAINER_DIR
    if fresh:
        remove_checkpoints(folder)
    trainer.mkdir(parents=True, exist_ok=True)
    (trainer / OWNER_FILE).write_text(json.dumps({"optuna_trial_id": trial_id, "mlflow_run_id": run_id}))
    return trainer


def remove_checkpoints(folder: Path) -> None:
    """Drop a recorded trial's checkpoints: they served resuming it, and its model/ is kept."""
    import shutil

    for checkpoint in (folder / TRAINER_DIR).glob("checkpoint-*"):
        shutil.rmtree(checkpoint, ignore_errors=True)


MODEL_DIR, MODEL_REMOVED = "model", "model.removed"  # a trial's trained model; why it is gone (keep_models)


def remove_model(folder: Path, why: str) -> bool:
    """Drop a recorded trial's model/ (search.keep_models), leaving why in its place; False: it held none."""
    import shutil

    if not (folder / MODEL_DIR).is_dir():
        return False
    gone = folder / f"{MODEL_DIR}.removing"
    shutil.rmtree(gone, ignore_errors=True)  # what an interrupted removal left
    try:
        (folder / MODEL_DIR).rename(gone)  # at once: never a half-removed model/ for harness eval to load
    except FileNotFoundError:  # another worker sharing the folder removed it first
        return False
    (folder / MODEL_REMOVED).write_text(why + "\n")
    shutil.rmtree(gone, ignore_errors=True)
    return True


def resumable_checkpoint(folder: Path, trial_id: int, run_id: str | None) -> Path | None:
    """The newest complete checkpoint this Optuna trial's training saved in its folder, or None."""
    import json

    from harness.training import last_checkpoint

    trainer = folder / TRAINER_DIR
    try:
        owner = json.loads((trainer / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None
    if owner != {"optuna_trial_id": trial_id, "mlflow_run_id": run_id}:
        return None
    return last_checkpoint(trainer)


def resolve_config(spec: SweepSpec, params: dict[str, Any], seed: int | None = None) -> dict[str, Any]:
    """The trial's complete settings: the spec with the sampled params written over it (and a
    replicate's training seed over the spec's)."""
    train = dict(spec.train) | {k: v for k, v in params.items() if "." not in k}
    mix = dict(spec.data.mix or {name: 1.0 for name in spec.data.sources})
    mix |= {k.removeprefix("mix."): v for k, v in params.items() if k.startswith("mix.")}
    if "data.source" in params:  # a searched choice of one source: recipes (or datasets) compared head to head
        mix = {name: float(name == params["data.source"]) for name in spec.data.sources}
    total = sum(mix.values()) or 1.0
    lora = spec.model.lora.model_dump() if spec.model.lora else None
    if lora is not None:
        lora |= {k.removeprefix("lora."): v for k, v in params.items() if k.startswith("lora.")}
    return {
        "study": spec.study,
        "seed": spec.seed if seed is None else seed,
        "spec_hash": spec.spec_hash(),
        "params": dict(params),
        "model": {
            "name": spec.model.name,
            "revision": spec.model.revision,
            "dtype": spec.model.dtype,
            "lora": lora,
            "ref_cache": spec.model.ref_cache,
        },
        "data": {
            "mix": {name: mix.get(name, 0.0) for name in spec.data.sources},  # weights, as searched
            "shares": {name: mix.get(name, 0.0) / total for name in spec.data.sources},
            "size": spec.data.size,
            "eval_fraction": spec.data.eval_fraction,
            "eval_size": spec.data.eval_size,
        },
        "train": train,
        "evals": spec.evals.model_dump(mode="json"),  # a checkpoint says how it is scored (harness eval)
    }


def mlflow_params(config: dict[str, Any]) -> dict[str, Any]:
    """One param per setting; searched knobs keep their Optuna names (beta, mix.identity, lora.r)."""
    from harness.tracking import flatten

    params = dict(config["train"])
    params |= {f"mix.{k}": v for k, v in config["data"]["mix"].items()}
    params |= {f"data.share.{k}": round(v, 6) for k, v in config["data"]["shares"].items()}
    params |= {f"data.{k}": config["data"][k] for k in ("size", "eval_fraction", "eval_size")}
    params |= {"model.name": config["model"]["name"], "model.dtype": config["model"]["dtype"]}
    params |= flatten({"lora": config["model"]["lora"]}) if config["model"]["lora"] else {"lora": "none"}
    params |= {"seed": config["seed"], "spec_hash": config["spec_hash"]}
    params |= {f"version.{k}": v for k, v in library_versions().items()}
    return params


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("torch", "transformers", "trl", "peft", "optuna", "mlflow", "lm_eval"):
        try:
            out[package] = version(package.replace("_", "-"))
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


# ---------------------------------------------------------------- inside the trial process


def run(request: TrialRequest, events: Any) -> TrialResult:
    """The trial itself; runs in its own process (harness.worker)."""
    from harness import models, refcache, scoring, tokcache, training
    from harness.tracking import Tracker
    from harness.worker import mark_phase

    spec = SweepSpec.model_validate(request.spec)
    config = resolve_config(spec, request.params, request.seed)
    tracker = Tracker(request.tracking_uri)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def status(text: str, phase: str | None = None) -> None:
        if phase:  # on disk first: a trial killed by the kernel can still say where it was
            mark_phase(request.folder, phase)
        events.put(("status", request.number, text))

    status("loading data and model", phase="setup")
    import transformers

    transformers.set_seed(config["seed"])  # a replicate's own; the data below is drawn with the spec's
    trial_data = request.data
    model_path = models.resolve(
        spec.model.name, Path(request.cache_dir), log=status, announce=lambda t: events.put(("note", request.number, t))
    )
    precision = models.precision(spec.model.dtype, lora=spec.model.lora is not None)
    model, tokenizer = models.load(model_path, spec.model.revision, precision.weights)
    _save_config(request, config, model_path, trial_data, tracker)
    seconds["time.setup_s"] = time.perf_counter() - clock

    clock, cpu = time.perf_counter(), time.process_time()
    status("training", phase="training")
    cached = refcache.enabled(spec.model.ref_cache, config["train"])
    pruning = _Pruning.maybe(spec, request)
    every = (
        spec.search.pruner.every
        if pruning
        else training.eval_steps(config["train"], trial_data.train, trial_data.heldout)
    )
    resume_from = Path(request.resume_from) if request.resume_from else None
    resumed = training.trained_seconds(resume_from)  # read now: training rotates the checkpoint away
    before, before_cpu = resumed or (0.0, 0.0)
    logged: dict[str, int] = {}
    if resume_from:
        status(f"training, resumed from {resume_from.name}", phase="training")
        logged = tracker.last_steps(request.run_id)

    def new_logs(step: int, logs: dict[str, float]) -> dict[str, float]:
        """A resumed training's logs: the steps between its checkpoint and the stop are trained again (the same
        batches), but were logged already; and the Trainer's summary of this attempt alone is left out."""
        if not resume_from:
            return logs
        return {k: v for k, v in training.attempt_logs(logs).items() if step > logged.get(k, -1)}

    trainer_dir = checkpoints_folder(request.folder, request.trial_id, request.run_id, fresh=resume_from is None)
    dpo = training.dpo_config(
        config["train"],
        trainer_dir,
        config["seed"],
        eval_every=every,
        mixed=precision.mixed,
        has_eval=bool(trial_data.heldout),
        precompute_ref=cached,
    )
    fingerprint = refcache.tokenizer_fingerprint(tokenizer)  # one for both caches
    ref_cache = None  # opened on the base weights; it serves the probes' reference even where training cannot use it
    if spec.model.ref_cache:
        ref_cache = _study_cache(
            "reference", lambda: _ref_cache(request, config, model, tokenizer, model_path, precision, dpo, fingerprint)
        )
    tokens = None
    if spec.model.token_cache:
        settings = training.resolved_train_settings(dpo, list(tokcache.SETTINGS))
        tokens = _study_cache(
            "token", lambda: tokcache.open_for(Path(request.output_dir), tokenizer, settings, fingerprint)
        )
    lora = config["model"]["lora"]
    try:
        trained = training.train_dpo(
            model,
            tokenizer,
            trial_data.train,
            trial_data.heldout,
            dpo,
            training.lora_config(**lora) if lora else None,
            on_log=lambda step, logs: tracker.log_metrics(request.run_id, new_logs(step, logs), step, wait=False),
            on_eval=pruning.check if pruning else None,
            on_step=lambda step, total: events.put(("step", request.number, step, total)),
            ref_cache=ref_cache if cached else None,
            resume_from=resume_from,
            token_cache=tokens,
            on_status=status,
        )
    finally:  # the curves up to a failure are kept too
        tracker.flush()
        for cache in (tokens, ref_cache):
            if cache is not None:
                cache.close()
    logged = (tokens.metrics() if tokens is not None else {}) | (
        ref_cache.metrics() if ref_cache is not None and cached else {}
    )
    tracker.log_metrics(request.run_id, logged)
    models.save(trained, tokenizer, request.folder / MODEL_DIR)
    (request.folder / MODEL_REMOVED).unlink(missing_ok=True)  # a deleted study's trial of this number left it
    # every thread of the trial (CPU: steadier than wall time), and a resumed trial's training before its checkpoint
    seconds["time.train_s"] = before + time.perf_counter() - clock
    seconds["time.train_cpu_s"] = before_cpu + time.process_time() - cpu
    if resumed:  # (a checkpoint of an older harness does not say)
        seconds["time.train_before_resume_s"] = before
    if pruning and pruning.pruned_at is not None:
        tracker.log_metrics(request.run_id, seconds)
        return TrialResult(PRUNED, reason=f"pruned at step {pruning.pruned_at}", seconds=seconds)

    clock = time.perf_counter()
    status("scoring", phase="scoring")
    ctx = scoring.Context(
        spec.evals,
        Path(request.spec_dir),
        spec.seed,
        trial_data.train,
        trial_data.heldout,
        _base_card(request),
        train=config["train"],
        train_sources=trial_data.train_sources,
        heldout_sources=trial_data.heldout_sources,
        shares=config["data"]["shares"],
        ref_cache=ref_cache.for_scoring() if ref_cache is not None else None,
    )
    try:
        with scoring.reference_model(trained, model_path, _loader(spec)) as reference:
            card = scoring.score(trained, tokenizer, ctx, reference, status)
    finally:
        if ctx.ref_cache is not None:
            ctx.ref_cache.close()
    seconds["time.eval_s"] = time.perf_counter() - clock
    seconds["time.eval_share"] = seconds["time.eval_s"] / max(seconds["time.train_s"], 1e-9)
    tracker.log_metrics(request.run_id, card.metrics | seconds | _scoring_cache_counts(ctx.ref_cache))
    for name, payload in card.artifacts.items():
        tracker.log_dict(request.run_id, payload, name)
    tracker.log_dict(request.run_id, card.items, "scorecard_items.json")
    return TrialResult(COMPLETE, scores=card.metrics, seconds=seconds)


def _study_cache(what: str, open_cache: Any) -> Any:
    """open_cache(), or None with a warning in the trial's log where the study's cache cannot be opened (its folder
    cannot be made: permissions, a file in its place): the trial goes on without it, as it does when the cache
    fails later (a full disk)."""
    import logging
    import sqlite3

    try:
        return open_cache()
    except (OSError, sqlite3.Error) as exc:
        logging.getLogger("harness.trial").warning("the study's %s cache cannot be opened (%s); not used", what, exc)
        return None


def _ref_cache(
    request: TrialRequest,
    config: dict,
    model: Any,
    tokenizer: Any,
    model_path: str,
    precision: Any,
    dpo: Any,
    fingerprint: str,
) -> Any:
    """The study's reference log-prob cache, keyed for this trial's reference model, tokenizer and TRL settings."""
    from harness import refcache, training

    reference = {
        "name": config["model"]["name"],
        "path": model_path,
        "revision": config["model"]["revision"],
        "dtype": precision.weights,
    }
    settings = training.resolved_train_settings(dpo, list(training.REFERENCE_SETTINGS))
    return refcache.open_for(Path(request.output_dir), model, tokenizer, reference, settings, fingerprint)


def _scoring_cache_counts(cache: Any) -> dict[str, float]:
    return {"refcache.scoring_hits": cache.hits, "refcache.scoring_misses": cache.misses} if cache else {}


def _loader(spec: SweepSpec) -> Any:
    """Loads the reference model in the same precision as the trained one, so their log-probs compare."""
    from harness import models

    weights = models.precision(spec.model.dtype, lora=spec.model.lora is not None).weights
    return lambda path: models.load(path, spec.model.revision, weights)


def _base_card(request: TrialRequest) -> Any:
    """The base model's scorecard, written by harness.baseline before the first trial."""
    import json

    from harness.baseline import card_path
    from harness.scoring import Scorecard

    path = card_path(Path(request.output_dir))
    return Scorecard.from_json(json.loads(path.read_text())) if path.is_file() else None


def _save_config(request: TrialRequest, config: dict, model_path: str, trial_data: Any, tracker: Any) -> None:
    """The resolved config travels with the checkpoint and with the run (nanoGPT's habit); the
    pairs go along too, so `harness eval` can re-run the probes on the checkpoint later."""
    import json

    import yaml

    resolved = config | {"model": config["model"] | {"path": model_path}, "spec_dir": request.spec_dir}
    counts = {"counts": trial_data.counts, "heldout_pairs": len(trial_data.heldout)}
    resolved["data"] = resolved["data"] | counts
    request.folder.mkdir(parents=True, exist_ok=True)
    (request.folder / "trial_config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    pairs = {
        "train": trial_data.train,
        "heldout": trial_data.heldout,
        "train_sources": trial_data.train_sources,
        "heldout_sources": trial_data.heldout_sources,
    }
    (request.folder / "pairs.json").write_text(json.dumps(pairs))
    tracker.log_artifact(request.run_id, request.folder / "trial_config.yaml")
    dropped = {f"data.{k}.dropped_identical": v for k, v in trial_data.dropped_identical.items()}
    tracker.log_metrics(request.run_id, dropped | {f"data.{k}.pairs": v for k, v in trial_data.counts.items()})


class _Pruning:
    """Reports held-out scores to the trial's Optuna pruner as training goes."""

    def __init__(self, spec: SweepSpec, request: TrialRequest):
        import optuna

        from harness.search import load_study, pruner_sign

        study = load_study(spec.study, request.storage, spec)
        self.trial = optuna.Trial(study, request.trial_id)
        self.metric = spec.search.pruner.metric
        self.sign = pruner_sign(spec.search.objectives[0].direction, self.metric)
        self.pruned_at: int | None = None

    @classmethod
    def maybe(cls, spec: SweepSpec, request: TrialRequest) -> _Pruning | None:
        # a seed replicate runs to the end: it measures its configuration's spread, it does not compete
        return cls(spec, request) if spec.search.pruner.type != "none" and request.seed is None else None

    def check(self, step: int, metrics: dict[str, float]) -> bool:
        value = metrics.get(self.metric)
        if value is None:
            return False
        self.trial.report(self.sign * value, step)
        if self.trial.should_prune():
            self.pruned_at = step
            return True
        return False
