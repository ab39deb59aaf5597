"""The `harness` command: parses arguments and calls the module that does the work.

Exit codes: 0 done; 1 a sweep stopped short (too many failed trials); 2 bad input (spec,
data, paths, options); 130 interrupted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from harness.stores import DEFAULT_STORAGE
from harness.tracking import DEFAULT_TRACKING_URI

app = typer.Typer(
    help="Optuna sweeps of TRL DPO trainings, tracked in MLflow, scored and reported.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

Storage = Annotated[
    str, typer.Option("--storage", help=f"Optuna storage URL. Default: {DEFAULT_STORAGE} (in this folder).")
]
TrackingUri = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        help=f"MLflow tracking URI. Default: $MLFLOW_TRACKING_URI, else {DEFAULT_TRACKING_URI}.",
    ),
]
OutputDir = Annotated[
    Path, typer.Option("--output-dir", help="Checkpoints, logs and caches: <dir>/<study>/trial-NNN/.")
]
ReportDir = Annotated[
    Path | None, typer.Option("--report-dir", help="Where the HTML report goes. Default: reports/<study>/.")
]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show each trial's status and library output.")]


def _quiet_libraries(verbose: bool) -> None:
    """Libraries log at INFO and draw progress bars; users want that only with -v."""
    import logging

    level = "INFO" if verbose else "WARNING"
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", level)  # read by MLflow when it is first imported
    if not verbose:  # read by transformers, datasets and the hub client when first imported
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(level)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _input_errors() -> tuple[type[Exception], ...]:
    from harness.data import DataError
    from harness.models import ModelError
    from harness.spec import SpecError
    from harness.stores import StoreError

    return SpecError, DataError, StoreError, ModelError


def _bad_input(exc: Exception) -> typer.Exit:
    err.print(f"error: {exc}", highlight=False, markup=False)
    return typer.Exit(2)


@app.command()
def sweep(
    spec: Annotated[Path, typer.Argument(help="Sweep spec (YAML), e.g. sweeps/beta.yaml.")],
    trials: Annotated[
        int | None, typer.Option("--trials", min=1, help="Total finished trials (overrides search.trials).")
    ] = None,
    storage: Storage = DEFAULT_STORAGE,
    tracking_uri: TrackingUri = None,
    output_dir: OutputDir = Path("outputs"),
    report_dir: ReportDir = None,
    devices: Annotated[
        str | None,
        typer.Option("--devices", help="GPUs to run trials on, one trial per GPU at a time: '0,1,2,3' or 'all'."),
    ] = None,
    parallel: Annotated[
        int, typer.Option("--parallel", min=1, help="Trials at the same time on the CPU (they share its cores).")
    ] = 1,
    verbose: Verbose = False,
) -> None:
    """Run (or resume) a sweep: the study is topped up to its declared number of finished trials."""
    from harness.progress import SweepProgress
    from harness.sweep import Sweep, SweepOptions
    from harness.tracking import default_uri

    _quiet_libraries(verbose)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill PID` stops as cleanly as Ctrl-C
    options = SweepOptions(
        storage=storage,
        tracking_uri=tracking_uri or default_uri(),
        output_dir=output_dir,
        report_dir=report_dir,
        trials=trials,
        verbose=verbose,
        devices=_devices(devices, parallel),
        parallel=parallel,
    )
    try:
        runner = Sweep(spec, options, SweepProgress(console, verbose))
        outcome = runner.run()
    except _input_errors() as exc:
        raise _bad_input(exc) from None
    if outcome.baseline_failed:
        err.print("Stopped: the base model could not be scored (see above); no trial was run.")
        raise typer.Exit(1)
    if outcome.interrupted:
        count = "" if outcome.finished is None else f" ({outcome.finished}/{outcome.target} finished)"
        err.print(f"Interrupted. Run the same command to resume{count}.")
        raise typer.Exit(130)
    if outcome.unreachable:
        err.print(
            f"Stopped: no trial could be claimed for about a minute ({escape(outcome.unreachable)}). Trials that "
            "finished are recorded, or kept in their folder's result.json until the study's database answers; "
            "run the same command to resume."
        )
        raise typer.Exit(1)
    _print_outcome(outcome, options)
    if not outcome.complete:
        raise typer.Exit(1)


def _devices(text: str | None, parallel: int) -> list[str] | None:
    """'0,1,3' or 'all' -> the CUDA device ids to pin trials to (checked against this machine)."""
    if text is None:
        return None
    if parallel != 1:
        raise _bad_input(ValueError("give --devices (GPUs) or --parallel (CPU), not both"))
    import torch

    count = torch.cuda.device_count()
    if count == 0:
        raise _bad_input(ValueError("--devices: this machine has no CUDA device; use --parallel N on the CPU"))
    if text.strip() == "all":
        return [str(i) for i in range(count)]
    ids = [part.strip() for part in text.split(",") if part.strip()]
    bad = [i for i in ids if not i.isdigit() or int(i) >= count]
    if not ids or bad or len(set(ids)) != len(ids):
        valid = f"'all' or distinct ids among 0..{count - 1}, comma-separated"
        raise _bad_input(ValueError(f"--devices {text!r}: expected {valid}"))
    return ids


def _print_outcome(outcome: object, options: object) -> None:
    from harness.stores import redact
    from harness.sweep import SweepOptions, SweepOutcome

    assert isinstance(outcome, SweepOutcome) and isinstance(options, SweepOptions)
    if outcome.complete:
        console.print(f"[bold green]Done[/]: {outcome.finished}/{outcome.target} trials finished.")
    else:
        console.print(
            f"[bold red]Stopped[/]: {outcome.failed_in_a_row} trials failed in a row; "
            f"{outcome.finished}/{outcome.target} finished. Fix the cause and run the same command to resume."
        )
    if outcome.report:
        console.print(f"Report: {outcome.report}")
    console.print(f"Browse the runs: harness ui {outcome.study} --tracking-uri {redact(options.tracking_uri)}")


@app.command()
def validate(spec: Annotated[Path, typer.Argument(help="Sweep spec (YAML).")]) -> None:
    """Check a spec (and the files it names) and print what it would run."""
    from harness.spec import load_spec, summary

    try:
        loaded = load_spec(spec)
        sources = _check_files(loaded, spec)
    except _input_errors() as exc:
        raise _bad_input(exc) from None
    console.print(f"[green]{spec}: valid[/]")
    described = {name: _describe_source(s) for name, s in sources.items()}
    for name, source in loaded.data.sources.items():  # hub datasets are read by the sweep (they need network)
        if name not in described:
            config = f", config {source.name}" if source.name else ""
            described[name] = f"hub dataset {source.hf} (split {source.split}{config}): read when the sweep runs"
    shown = summary(loaded) | {"sources": described}
    for key, value in shown.items():
        if isinstance(value, dict):
            console.print(f"  {key}:")
            for k, v in value.items():
                console.print(f"    {k}: {v}", highlight=False, markup=False)
        else:
            console.print(f"  {key}: {value}")


def _describe_source(source: Any) -> str:
    read_as = ", ".join(f"{n} {fmt}" for fmt, n in source.formats.items())
    dropped = f"; {source.dropped_identical} dropped (chosen = rejected)" if source.dropped_identical else ""
    return f"{len(source.train)} training + {len(source.heldout)} held-out pairs ({read_as} rows){dropped}"


def _check_files(spec: object, path: Path) -> dict[str, Any]:
    """Local data files, model folders and eval suites are read; hub datasets and models are left for
    the sweep (they need network)."""
    from harness import data, models
    from harness.scoring import check_evals
    from harness.spec import SweepSpec

    assert isinstance(spec, SweepSpec)
    models.check(spec.model.name, spec.model.revision, reach_hub=False)
    local = {n: s for n, s in spec.data.sources.items() if s.path}
    loaded = {}
    if local:
        loaded = data.load_sources(spec.data.model_copy(update={"sources": local, "mix": None}), spec.seed, path.parent)
    check_evals(spec.evals, path.parent)
    return loaded


@app.command("eval")
def eval_(
    model: Annotated[
        str, typer.Argument(help="A model folder, a hub id, 'toy', or a trial folder (outputs/<study>/trial-NNN).")
    ],
    evals: Annotated[
        Path | None,
        typer.Option("--evals", help="A sweep spec (or any YAML with an 'evals:' section). Default: a trial's own."),
    ] = None,
    base: Annotated[
        str | None,
        typer.Option("--base", help="Reference model for the comparison and probes. Default: a trial's base."),
    ] = None,
    log_to: Annotated[
        str | None, typer.Option("--log-to", help="Also log the scorecard as a run of this MLflow experiment.")
    ] = None,
    tracking_uri: TrackingUri = None,
    output_dir: OutputDir = Path("outputs"),
    verbose: Verbose = False,
) -> None:
    """Print the scorecard of one model next to its base model's."""
    from harness.evaluate import evaluate, resolve_target
    from harness.models import cache_dir
    from harness.stores import check_name

    _quiet_libraries(verbose)
    log = lambda text: err.print(f"[dim]{text}[/]")  # noqa: E731
    try:
        if log_to:
            check_name(log_to, "experiment (--log-to)")
        target = resolve_target(model, evals, base, cache_dir(output_dir), log)
        from harness.scoring import check_evals

        check_evals(target.evals, target.spec_dir)
    except _input_errors() as exc:
        raise _bad_input(exc) from None
    from harness.scoring.bench import BenchmarkError

    try:
        card, base_card = evaluate(target, log=log)
    except BenchmarkError as exc:  # e.g. an lm-eval task name while offline: the user's input, named
        raise _bad_input(exc) from None
    _print_scorecard(target.model, card.metrics, base_card.metrics if base_card else None)
    if log_to:
        _log_eval(log_to, tracking_uri, target, card.metrics)


def _print_scorecard(name: str, metrics: dict[str, float], base: dict[str, float] | None) -> None:
    from rich.table import Table

    table = Table(title=f"Scorecard: {name}", title_justify="left")
    table.add_column("metric")
    table.add_column("model", justify="right")
    if base is not None:
        table.add_column("base", justify="right")
        table.add_column("Δ", justify="right")
    for key in sorted(metrics):
        row = [key, f"{metrics[key]:.4g}"]
        if base is not None:
            b = base.get(key)
            row += [f"{b:.4g}", f"{metrics[key] - b:+.4g}"] if b is not None else ["", ""]
        table.add_row(*row)
    console.print(table)


def _log_eval(experiment: str, tracking_uri: str | None, target: Any, metrics: dict[str, float]) -> None:
    from harness.tracking import ROLE_TAG, Tracker, default_uri

    tracker = Tracker(tracking_uri or default_uri())
    run = tracker.client.create_run(tracker.experiment(experiment), tags={ROLE_TAG: "eval"}, run_name="eval")
    tracker.log_params(run.info.run_id, {"model": target.model, "base": target.base})
    tracker.log_metrics(run.info.run_id, metrics)
    tracker.end(run.info.run_id, "FINISHED")
    console.print(f"Logged to MLflow experiment '{experiment}' as run {run.info.run_id}")


@app.command()
def report(
    studies: Annotated[list[str], typer.Argument(help="One study, or several to compare side by side.")],
    storage: Storage = DEFAULT_STORAGE,
    tracking_uri: TrackingUri = None,
    report_dir: ReportDir = None,
) -> None:
    """Write the HTML report of a study (or a comparison of several) from Optuna and MLflow."""
    from harness.report import ReportError, build_report
    from harness.stores import StoreError, check_name
    from harness.tracking import default_uri

    _quiet_libraries(False)
    try:
        for study in studies:
            check_name(study)
        folder = report_dir or Path("reports") / "-vs-".join(studies)
        path = build_report(studies, storage, tracking_uri or default_uri(), folder)
    except (ReportError, StoreError) as exc:
        raise _bad_input(exc) from None
    console.print(f"Report: {path}")


data_app = typer.Typer(help="Inspect and build preference data.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("audit")
def data_audit(
    target: Annotated[
        str, typer.Argument(help="A sweep spec (.yaml: all its sources), or one source: toy:<name>, .jsonl, .json.")
    ],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Tokenizer and chat template for truncation ('none': skip). Default: the spec's model, or toy.",
        ),
    ] = None,
    max_length: Annotated[
        int | None, typer.Option("--max-length", min=1, help="Default: the spec's train.max_length, else 512.")
    ] = None,
    intended: Annotated[
        list[str] | None,
        typer.Option("--intended", help="A phrase the pairs are meant to teach (repeatable); never a shortcut."),
    ] = None,
    alpha: Annotated[
        float, typer.Option("--alpha", min=1e-12, max=0.5, help="Significance over all phrases tested (Bonferroni).")
    ] = 0.05,
    min_count: Annotated[int, typer.Option("--min-count", min=1, help="Pairs a phrase must occur in.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print the audit as JSON.")] = False,
    output_dir: OutputDir = Path("outputs"),
) -> None:
    """Audit preference pairs before training: duplicates, truncation, length bias, shortcut phrases."""
    import json

    from harness.audit import audit_target
    from harness.models import cache_dir

    _quiet_libraries(False)
    try:
        with err.status(f"auditing {target}"):
            found = audit_target(
                target, model, max_length, cache_dir(output_dir), tuple(intended or ()), alpha, min_count
            )
    except _input_errors() as exc:
        raise _bad_input(exc) from None
    if as_json:
        print(json.dumps(found.to_json(), indent=2))
        return
    _print_audit(found)


@data_app.command("build")
def data_build(
    recipe: Annotated[str, typer.Argument(help="correction | on-policy")],
    prompts: Annotated[
        str, typer.Option("--prompts", help="toy:<source>, a .txt file (one per line), or a .jsonl/.json file.")
    ],
    out: Annotated[Path, typer.Option("--out", help="The JSON lines file to write (TRL's format + provenance).")],
    model: Annotated[str, typer.Option("--model", help="toy, a local model folder or a hub id.")] = "toy",
    replace: Annotated[
        list[str] | None,
        typer.Option("--replace", help="correction: PATTERN=REPLACEMENT regex on the model's answer (repeatable)."),
    ] = None,
    rewrite: Annotated[
        str | None, typer.Option("--rewrite", help="correction: module:function(prompt, answer) -> chosen answer.")
    ] = None,
    reward: Annotated[
        str | None,
        typer.Option("--reward", help="on-policy: regex:PATTERN, keyword:W1,W2, module:function or model:PATH."),
    ] = None,
    samples: Annotated[int, typer.Option("--samples", min=2, help="on-policy: answers sampled per prompt.")] = 4,
    steer: Annotated[
        str | None,
        typer.Option("--steer", help="on-policy: a system message half of the samples are drawn under (not stored)."),
    ] = None,
    temperature: Annotated[
        float, typer.Option("--temperature", min=0.01, help="on-policy: sampling temperature.")
    ] = 1.0,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1)] = 48,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Use the first N prompts.")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    output_dir: OutputDir = Path("outputs"),
) -> None:
    """Build preference pairs from a model's own answers (correction or on-policy recipe)."""
    from harness import recipes, rewards
    from harness.models import cache_dir

    _quiet_libraries(False)
    try:
        recipes.check_options(recipe, replace, rewrite, reward, steer)
        rule = recipes.load_rewrite(replace, rewrite) if recipe == "correction" else None
        if recipe == "on-policy" and not reward:
            raise recipes.RecipeError(f"on-policy needs --reward: {rewards.FORMS}")
        score = rewards.load_reward(reward) if recipe == "on-policy" and reward else None
        rule_name = rewrite or "; ".join(replace or []) or None
        with err.status(f"{recipe}: generating with {model}"):
            built = recipes.build(
                recipe, model, prompts, out, rewrite=rule, reward=score, reward_name=reward, rewrite_name=rule_name,
                samples=samples, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed, steer=steer,
                limit=limit, cache_dir=cache_dir(output_dir),
            )  # fmt: skip
    except (*_input_errors(), recipes.RecipeError, rewards.RewardError) as exc:
        raise _bad_input(exc) from None
    dropped = ", ".join(f"{n} {why}" for why, n in built.dropped.items()) or "none"
    console.print(f"[green]{built.pairs} pairs[/] from {built.prompts} prompts -> {built.path} (dropped: {dropped})")


def _print_audit(found: Any) -> None:
    from rich.table import Table

    table = Table(title=f"Data audit (tokenizer: {found.model or 'none'})", title_justify="left")
    for column in ("source", "pairs", "same", "dup", "cut", "len c/r", "shortcuts"):
        table.add_column(column, justify="left" if column == "source" else "right")
    for s in found.sources:
        cut = (
            "—" if s.truncated is None else f"{s.truncated}@{s.max_length}" + (f" of {s.audited}" if s.sampled else "")
        )
        ratio = f"{s.length_ratio:.2f}" + (" ⚠" if s.length_bias else "")
        short = str(len(s.shortcuts)) + (" ⚠" if s.shortcuts else "")
        table.add_row(s.name, str(s.pairs), str(s.identical), str(s.duplicates), cut, ratio, short)
    console.print(table)
    for s in found.sources:
        if s.phrases:
            phrases = Table(title=f"{s.name}: separating phrases (|z| ≥ {s.threshold_z:.2f})", title_justify="left")
            for column in ("phrase", "side", "chosen", "rejected", "z", "reading"):
                phrases.add_column(column, justify="right" if column in ("chosen", "rejected", "z") else "left")
            for p in s.phrases:
                reading = {"edit": f"edit: replaces '{p.partner}'", "intended": "intended"}.get(p.kind, "SHORTCUT")
                phrases.add_row(p.text, p.side, str(p.chosen_pairs), str(p.rejected_pairs), f"{p.z:+.1f}", reading)
            console.print(phrases)
        for line in s.warnings():
            console.print(f"[yellow]{s.name}[/]: {line}", highlight=False)
    for note in found.notes:
        console.print(f"[dim]note: {note}[/]")


@app.command()
def ui(
    study: Annotated[str | None, typer.Argument(help="Open on this study's runs (its URL is printed).")] = None,
    tracking_uri: TrackingUri = None,
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1.")] = 5000,
) -> None:
    """Open the MLflow UI over the harness's tracking store (on 127.0.0.1)."""
    from harness.stores import StoreError, check_name, redact
    from harness.tracking import Tracker, default_uri

    uri = tracking_uri or default_uri()
    home = f"http://127.0.0.1:{port}"
    try:
        experiments = Tracker(uri).experiment_ids()
        if study is not None and check_name(study) not in experiments:
            known = ", ".join(sorted(experiments)) or "none yet"
            raise StoreError(f"no study '{study}' in {redact(uri)}. Studies there: {known}")
    except StoreError as exc:
        raise _bad_input(exc) from None
    served = uri.startswith(("http://", "https://"))  # a tracking server serves its own UI: nothing to start
    if served:
        home = redact(uri).rstrip("/")
        console.print(f"MLflow UI: the tracking server serves it at {home}")
    else:
        console.print(f"MLflow UI for {redact(uri)} at {home} (Ctrl-C to stop)")
    for name, experiment_id in experiments.items():
        if study in (None, name):
            console.print(f"  {name}: {home}/#/experiments/{experiment_id}/runs")
    if served:
        return
    command = [sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port", str(port)]
    env = os.environ | {"MLFLOW_BACKEND_STORE_URI": uri}  # not on the command line: `ps` would show a password
    try:
        code = subprocess.call(command, env=env)
    except KeyboardInterrupt:
        code = 0
    raise typer.Exit(code)


if __name__ == "__main__":
    app()
