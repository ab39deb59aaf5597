"""Plotly figures of a study: objective against each knob, history, Pareto front, importances, curves.

Plotly renders its text (titles, tick labels, legend names, hover text) as a subset of HTML, so
every string that comes from data goes through `_t`: a parameter value or name can never become
markup. Figures are returned as objects; render.py serialises them.
"""

from __future__ import annotations

import html
import math
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from harness.report.data import CURVE_METRICS, FAIL, PRUNED, StudyRecord, TrialRecord
from harness.report.verdict import Pick
from harness.search import pruner_sign

ACCENT = "#1c7ed6"  # the recommended trial, everywhere
FRONT = "#f08c00"  # the Pareto front
OTHER = "#adb5bd"  # every other trial
PRUNED_COLOR = "#e8590c"
FAILED_COLOR = "#ff8787"  # curves of failed trials: shown, since how they diverged is the diagnosis
FONT = "system-ui, -apple-system, Segoe UI, Roboto, sans-serif"  # local fonts only: no web font is fetched
CURVES = CURVE_METRICS[:4]  # loss, rewards/margins, logps/chosen, logps/rejected: the learning curves drawn
# Points drawn per curve: a longer history is drawn from each stretch's lowest and highest point, so spikes
# stay (64 trials of 2,000-point curves made a 17 MB page)
CURVE_POINTS = 400


def _t(value: Any) -> str:
    """Text for Plotly: escaped, since Plotly interprets tags in it."""
    return html.escape(str(value))


def _layout(fig: go.Figure, title: str, height: int = 340) -> go.Figure:
    fig.update_layout(
        title={"text": _t(title), "x": 0.01, "font": {"size": 15}},
        template="plotly_white",
        font={"family": FONT, "size": 12},
        height=height,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
        hoverlabel={"font": {"family": FONT}},
        showlegend=False,
    )
    return fig


def _hover(trial: TrialRecord, extra: dict[str, Any] | None = None) -> str:
    lines = [f"<b>trial {trial.number}</b>"]
    for key, value in {**trial.params, **(extra or {})}.items():
        lines.append(f"{_t(key)} = {_t(_fmt(value))}")
    return "<br>".join(lines)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _x(value: Any) -> Any:
    """Numbers stay numbers; categories become escaped text (they become tick labels)."""
    return value if isinstance(value, int | float) and not isinstance(value, bool) else _t(value)


def _step_hover(trial: TrialRecord) -> str:
    return f"trial {trial.number} ({trial.state.lower()})<br>step %{{x}}: %{{y:.4g}}<extra></extra>"


def _recommended(pick: Pick) -> int | None:
    return pick.recommended.number if pick.recommended else None


# ---------------------------------------------------------------- figures


def figures(record: StudyRecord, pick: Pick) -> dict[str, go.Figure]:
    """Every chart this study supports, by id; charts without data are left out."""
    out: dict[str, go.Figure] = {}
    if record.complete and _params(record):
        out["params"] = objective_vs_params(record, pick)
    if record.complete:
        out["history"] = history(record, pick)
    if record.multi and record.complete:
        out["pareto"] = pareto(record, pick)
    if record.importances:
        out["importance"] = importances(record)
    if any(t.curves for t in record.trials):
        out["curves"] = curves(record, pick)
    if any(t.intermediate for t in record.trials):
        out["pruner"] = pruner_view(record)
    return out


def _params(record: StudyRecord) -> list[str]:
    """Searched parameters, in the spec's order; those that vary first matter most, but all are shown."""
    space = list(record.spec.get("search", {}).get("space", {}))
    seen = {p for t in record.trials for p in t.params}
    return [p for p in space if p in seen] + sorted(seen - set(space))


def objective_vs_params(record: StudyRecord, pick: Pick) -> go.Figure:
    params, objectives = _params(record), record.objectives
    fig = make_subplots(
        rows=len(objectives),
        cols=len(params),
        shared_yaxes=True,
        horizontal_spacing=0.04 if len(params) > 3 else 0.07,
        vertical_spacing=0.12,
        column_titles=[_t(p) for p in params],
    )
    best = _recommended(pick)
    trials = record.complete
    for row, objective in enumerate(objectives, start=1):
        for col, param in enumerate(params, start=1):
            shown = [t for t in trials if param in t.params]
            fig.add_trace(
                go.Scatter(
                    x=[_x(t.params[param]) for t in shown],
                    y=[t.values[row - 1] for t in shown],
                    mode="markers",
                    marker={
                        "size": [15 if t.number == best else 9 for t in shown],
                        "color": [ACCENT if t.number == best else OTHER for t in shown],
                        "symbol": ["star" if t.number == best else "circle" for t in shown],
                        "line": {"width": 1, "color": "#495057"},
                    },
                    hovertext=[_hover(t, {objective: t.values[row - 1]}) for t in shown],
                    hoverinfo="text",
                    name=_t(objective),
                ),
                row=row,
                col=col,
            )
            fig.update_xaxes(_space_axis(record, param), row=row, col=col)
        fig.update_yaxes(title_text=_t(objective), row=row, col=1)
    title = "Objective against each searched parameter (★ recommended; log axes where the space is log)"
    return _layout(fig, title, height=300 + 180 * (len(objectives) - 1))


def _space_axis(record: StudyRecord, param: str) -> dict[str, Any]:
    """The x axis spans the searched range, so one sees where in the space the trials landed."""
    dim = record.spec.get("search", {}).get("space", {}).get(param) or {}
    bounds = dim.get("float") or dim.get("int")
    if not bounds:
        return {"type": "category"} if dim.get("choice") is not None else {}
    low, high = bounds
    if dim.get("log"):
        pad = (math.log10(high) - math.log10(low)) * 0.05
        ticks = _log_ticks(low, high)
        return {
            "type": "log",
            "range": [math.log10(low) - pad, math.log10(high) + pad],
            "tickvals": ticks,
            "ticktext": [f"{v:g}" for v in ticks],
        }
    pad = (high - low) * 0.05 or 1
    return {"range": [low - pad, high + pad]}


def _log_ticks(low: float, high: float) -> list[float]:
    """1-2-5 ticks with full labels (Plotly's default log ticks label most digits bare: '2', '5')."""
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    ticks = [(m, round(m * 10.0**d, 12)) for d in decades for m in (1, 2, 5)]
    inside = [(m, t) for m, t in ticks if low * 0.999 <= t <= high * 1.001]
    return [t for m, t in inside if len(inside) <= 8 or m == 1]


def history(record: StudyRecord, pick: Pick) -> go.Figure:
    objectives = record.objectives
    fig = make_subplots(rows=len(objectives), cols=1, shared_xaxes=True, vertical_spacing=0.08)
    best = _recommended(pick)
    trials = sorted(record.complete, key=lambda t: t.number)
    for i, objective in enumerate(objectives):
        fig.add_trace(
            go.Scatter(
                x=[t.number for t in trials],
                y=[t.values[i] for t in trials],
                mode="markers",
                marker={
                    "size": [15 if t.number == best else 9 for t in trials],
                    "color": [ACCENT if t.number == best else OTHER for t in trials],
                    "symbol": ["star" if t.number == best else "circle" for t in trials],
                    "line": {"width": 1, "color": "#495057"},
                },
                hovertext=[_hover(t, {objective: t.values[i]}) for t in trials],
                hoverinfo="text",
                name=_t(objective),
            ),
            row=i + 1,
            col=1,
        )
        if not record.multi:
            fig.add_trace(_best_so_far(trials, record.directions[0]), row=1, col=1)
        fig.update_yaxes(title_text=_t(objective), row=i + 1, col=1)
    numbers = [t.number for t in trials]
    span = max(numbers) - min(numbers)
    fig.update_xaxes(dtick=1 if span <= 20 else None, tickformat="d", range=[min(numbers) - 0.5, max(numbers) + 0.5])
    fig.update_xaxes(title_text="trial", row=len(objectives), col=1)
    title = "Optimization history" + ("" if record.multi else " (line: best so far)")
    return _layout(fig, title, height=300 + 160 * (len(objectives) - 1))


def _best_so_far(trials: list[TrialRecord], direction: str) -> go.Scatter:
    pick_best = max if direction == "maximize" else min
    running, ys = None, []
    for t in trials:
        running = t.values[0] if running is None else pick_best(running, t.values[0])
        ys.append(running)
    return go.Scatter(
        x=[t.number for t in trials],
        y=ys,
        mode="lines",
        line={"shape": "hv", "color": ACCENT, "width": 2},
        hoverinfo="skip",
        name="best so far",
    )


def pareto(record: StudyRecord, pick: Pick) -> go.Figure:
    """The first two objectives; the front joined in order, the recommendation starred."""
    (x_name, y_name), best = record.objectives[:2], _recommended(pick)
    front = {t.number for t in pick.pareto}
    fig = go.Figure()
    for on_front in (False, True):
        shown = [t for t in record.complete if (t.number in front) == on_front]
        if on_front:
            shown.sort(key=lambda t: t.values[0])
        fig.add_trace(
            go.Scatter(
                x=[t.values[0] for t in shown],
                y=[t.values[1] for t in shown],
                mode="markers+lines" if on_front else "markers",
                line={"color": FRONT, "dash": "dot", "width": 1},
                marker={
                    "size": [16 if t.number == best else 10 for t in shown],
                    "color": [ACCENT if t.number == best else FRONT if on_front else OTHER for t in shown],
                    "symbol": ["star" if t.number == best else "circle" for t in shown],
                    "line": {"width": 1, "color": "#495057"},
                },
                hovertext=[_hover(t, dict(zip(record.objectives, t.values, strict=True))) for t in shown],
                hoverinfo="text",
                name="Pareto front" if on_front else "dominated",
            )
        )
    arrows = {"maximize": "→ better", "minimize": "← better"}
    fig.update_xaxes(title_text=f"{_t(x_name)} ({arrows[record.directions[0]]})")
    fig.update_yaxes(title_text=f"{_t(y_name)} ({record.directions[1]})")
    more = f" (first 2 of {len(record.objectives)} objectives)" if len(record.objectives) > 2 else ""
    fig = _layout(fig, f"Pareto front{more}: orange, ★ recommended")
    return fig


def importances(record: StudyRecord) -> go.Figure:
    fig = go.Figure()
    for objective, scores in zip(record.objectives, record.importances or [], strict=False):
        names = sorted(scores, key=scores.get)
        fig.add_trace(
            go.Bar(
                x=[scores[n] for n in names],
                y=[_t(n) for n in names],
                orientation="h",
                name=_t(objective),
                hovertemplate="%{y}: %{x:.2f}<extra>" + _t(objective) + "</extra>",
            )
        )
    fig.update_xaxes(title_text="importance (fANOVA, share of objective variance)", range=[0, 1])
    fig = _layout(fig, "Parameter importances", height=220 + 28 * len(_params(record)))
    fig.update_layout(showlegend=record.multi, barmode="group", colorway=[ACCENT, FRONT, "#37b24d"])
    return fig


def curves(record: StudyRecord, pick: Pick) -> go.Figure:
    """All trials overlaid, grey; the recommended one drawn last, in colour."""
    shown = [m for m in CURVES if any(t.curves.get(m) for t in record.trials)]
    rows = (len(shown) + 1) // 2
    fig = make_subplots(rows=rows, cols=2, subplot_titles=shown, horizontal_spacing=0.1, vertical_spacing=0.16)
    best = _recommended(pick)
    ordered = sorted(record.trials, key=lambda t: t.number == best)  # the recommended one on top
    for i, metric in enumerate(shown):
        for trial in ordered:
            if trial.curves.get(metric):
                fig.add_trace(_curve(trial, metric, trial.number == best), row=i // 2 + 1, col=i % 2 + 1)
    fig.update_xaxes(title_text="step", row=rows)
    title = "Learning curves (blue: recommended; orange dotted: pruned; red dashed: failed)"
    return _layout(fig, title, height=100 + 220 * rows)


def _curve(trial: TrialRecord, metric: str, mine: bool) -> go.Scatter:
    points = thinned(trial.curves[metric])
    return go.Scatter(
        x=[s for s, _ in points],
        y=[v for _, v in points],
        mode="lines" if len(points) > 1 else "markers",  # a run that died after one log is still seen
        line={
            "color": ACCENT if mine else {FAIL: FAILED_COLOR, PRUNED: PRUNED_COLOR}.get(trial.state, OTHER),
            "width": 3 if mine else 1.2,
            "dash": {PRUNED: "dot", FAIL: "dash"}.get(trial.state, "solid"),
        },
        opacity=1.0 if mine else 0.8,
        name=f"trial {trial.number}",
        hovertemplate=_step_hover(trial),
    )


def thinned(points: list[tuple[int, float]], most: int = CURVE_POINTS) -> list[tuple[int, float]]:
    """At most `most` + 2 of a curve's (step, value) points (`most` >= 2), in step order: the lowest and the
    highest of each stretch, and the first and last points. The points come sorted by step and finite
    (data.py drops NaN and inf)."""
    if len(points) <= most:
        return points
    stretch = math.ceil(len(points) / (most // 2))
    kept = {points[0], points[-1]}
    for start in range(0, len(points), stretch):
        part = points[start : start + stretch]
        kept |= {min(part, key=lambda p: p[1]), max(part, key=lambda p: p[1])}
    return sorted(kept)


def pruner_view(record: StudyRecord) -> go.Figure:
    metric = record.spec.get("search", {}).get("pruner", {}).get("metric", "intermediate value")
    sign = _pruner_sign(record, metric)
    fig = go.Figure()
    for trial in sorted(record.trials, key=lambda t: t.number):
        if not trial.intermediate:
            continue
        steps = sorted(trial.intermediate)
        pruned = trial.state == PRUNED
        fig.add_trace(
            go.Scatter(
                x=steps,
                y=[sign * trial.intermediate[s] for s in steps],
                mode="lines+markers",
                line={"color": PRUNED_COLOR if pruned else OTHER, "dash": "dot" if pruned else "solid"},
                marker={"symbol": ["circle"] * (len(steps) - 1) + ["x" if pruned else "circle"], "size": 8},
                name=f"trial {trial.number}",
                hovertemplate=_step_hover(trial),
            )
        )
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text=_t(metric))
    return _layout(fig, f"What the pruner saw: {metric} (orange ✕: pruned there)")


def _pruner_sign(record: StudyRecord, metric: str) -> float:
    """Trials report the metric negated when it improves against the objective's direction;
    negating again shows the metric itself."""
    return pruner_sign(record.directions[0], metric)


def comparison(records: list[StudyRecord], picks: list[Pick]) -> go.Figure | None:
    """Every complete trial's first objective, one column per study (when the studies share it)."""
    metrics = {r.objectives[0] for r in records}
    if len(metrics) != 1 or not any(r.complete for r in records):
        return None
    metric = metrics.pop()
    fig = go.Figure()
    for i, (record, pick) in enumerate(zip(records, picks, strict=True)):
        best = _recommended(pick)
        trials = record.complete
        fig.add_trace(
            go.Scatter(
                x=[i + _jitter(k, len(trials)) for k in range(len(trials))],
                y=[t.values[0] for t in trials],
                mode="markers",
                marker={
                    "color": [ACCENT if t.number == best else OTHER for t in trials],
                    "size": [15 if t.number == best else 10 for t in trials],
                    "symbol": ["star" if t.number == best else "circle" for t in trials],
                    "line": {"width": 1, "color": "#495057"},
                },
                hovertext=[_hover(t, {metric: t.values[0]}) for t in trials],
                hoverinfo="text",
                name=_t(record.name),
            )
        )
    names = [_t(r.name) for r in records]
    fig.update_xaxes(tickvals=list(range(len(records))), ticktext=names, range=[-0.5, len(records) - 0.5])
    fig.update_yaxes(title_text=_t(metric))
    return _layout(fig, f"{metric} of every complete trial, by study (★ recommended)")


def _jitter(k: int, n: int) -> float:
    """A fixed spread around the study's column, so points stay apart and the column stays centred."""
    width = min(n, 7)
    return ((k % width) - (width - 1) / 2) * 0.05
