"""``codesign report``: one self-contained, interactive HTML report of a study and a Markdown
file with the same tables.

The HTML embeds plotly.js (it opens offline, from a single file) and holds: a header (study,
storage with its password masked, objectives, budgets, trial counts by state, trainings and
the training cache), the pairwise fronts of the objectives, a 3-D front of the first three,
the hypervolume against trials, trainings and training hours, parallel coordinates of the
Pareto designs, parameter importances per objective and the Pareto table. The Markdown file
carries the header, best values, importances and the Pareto table as tables, and names the
HTML file for the figures.

What is drawn: one point per distinct design (a repeat lies on its first trial), feasible
designs coloured, the Pareto set (over all objectives, as :func:`codesign.report.pareto_trials`)
highlighted, designs over a budget in grey (successive halving's lower rungs hidden until clicked
in the legend); latency, energy, area and power on log axes.

Both files start with a generator mark, so that a later report may replace them; any other
existing file is refused (:func:`codesign.files.claim_file`).
"""

from __future__ import annotations

import datetime
import html
import itertools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from codesign.config import OBJECTIVES, ExperimentConfig
from codesign.errors import OutputError
from codesign.files import HTML_HEAD, claim_file, write_atomic
from codesign.report import (
    StudyView,
    by_design,
    constraints_of,
    design_summary,
    feasible,
    fmt_value,
    full_budget,
    hypervolume_trace,
    metrics,
    repeats,
    summary,
)

MD_HEAD = "<!-- generator: codesign report -->"  # the first line of every Markdown report
MAX_PANEL_OBJECTIVES = 4  # pairwise fronts of the first four objectives: at most six panels
MIN_IMPORTANCE_DESIGNS = 5  # fewer feasible designs: no parameter importances
TOP_IMPORTANCES = 10  # parameters shown per objective
PARETO = "#d62728"
FEASIBLE = "#1f77b4"
GREY = "#a0a0a0"


@dataclass(frozen=True)
class _Points:
    """The distinct finished designs, as the figures draw them."""

    pareto: list[FrozenTrial]
    dominated: list[FrozenTrial]  # feasible, not on the front
    over_budget: list[FrozenTrial]
    partial: list[FrozenTrial]  # within the budgets, trained on part of the budget only


def _points(read: StudyView) -> _Points:
    # whole trials: every point's hover text shows its design
    distinct = read.full([g[0] for g in read.groups.values()])
    front = read.pareto
    on_front = {t.number for t in front}
    return _Points(
        pareto=front,
        dominated=[t for t in distinct if feasible(t) and t.number not in on_front],
        over_budget=[t for t in distinct if any(v > 0 for v in t.constraints.values())],
        partial=[t for t in distinct if not full_budget(t)
                 and all(v <= 0 for v in t.constraints.values())],
    )


def _logged(name: str, trials: list[FrozenTrial], i: int) -> bool:
    """Log axis for a positive objective other than accuracy."""
    return name != "accuracy" and bool(trials) and all(t.values[i] > 0 for t in trials)


def _axis(name: str, i: int, pts: _Points) -> dict[str, Any]:
    """Axis settings of objective ``i``: a log axis for a positive objective other than
    accuracy (a label per decade once it spans two); accuracy fitted to the designs that
    were trained (an over-budget design carries a placeholder accuracy)."""
    every = [t for _, ts, _ in _groups(pts) for t in ts]
    if _logged(name, every, i):
        values = [t.values[i] for t in every]
        axis: dict[str, Any] = {"type": "log", "exponentformat": "power"}
        if math.log10(max(values)) - math.log10(min(values)) >= 2:
            axis["dtick"] = 1
        return axis
    trained = pts.pareto + pts.dominated + pts.partial
    if name != "accuracy" or not trained:
        return {"type": "linear"}
    lo, hi = min(t.values[i] for t in trained), max(t.values[i] for t in trained)
    pad = max(0.02, 0.05 * (hi - lo))
    return {"type": "linear", "range": [lo - pad, hi + pad]}


def _label(name: str) -> str:
    return f"{name} ({'max' if OBJECTIVES[name] == 'maximize' else 'min'})"


def _hover(t: FrozenTrial, objectives: list[str]) -> str:
    parts = [f"trial {t.number}"]
    parts += [f"{o} = {fmt_value(v)}" for o, v in zip(objectives, t.values)]
    d = design_summary(t)
    if d:
        parts.append(f"{d['family']} {d['stages']}, w{d['w_bits']}/a{d['a_bits']} bits, "
                     f"prune {fmt_value(d['prune'])}")
        parts.append(f"{d['array']} {d['dataflow']}, {fmt_value(d['glb_kib'])} KiB, "
                     f"{fmt_value(d['dram_gbps'])} GB/s, {fmt_value(d['freq_mhz'])} MHz")
    over = {k: v for k, v in constraints_of(t).items() if v > 0}
    if over:
        parts.append("over budget: " + ", ".join(f"{k} +{100 * v:.0f} %"
                                                 for k, v in over.items()))
    return "<br>".join(html.escape(p) for p in parts)


def _groups(pts: _Points) -> list[tuple[str, list[FrozenTrial], dict[str, Any]]]:
    """(legend name, trials, marker) of each group, drawn in this order (front last)."""
    return [
        (f"over budget ({len(pts.over_budget)})", pts.over_budget,
         {"color": GREY, "symbol": "x", "size": 5, "opacity": 0.5}),
        (f"lower rungs, part of the training budget ({len(pts.partial)})", pts.partial,
         {"color": GREY, "symbol": "circle-open", "size": 6, "opacity": 0.7}),
        (f"feasible, dominated ({len(pts.dominated)})", pts.dominated,
         {"color": FEASIBLE, "size": 7, "opacity": 0.55}),
        (f"Pareto set ({len(pts.pareto)})", pts.pareto,
         {"color": PARETO, "size": 11, "line": {"color": "black", "width": 1}}),
    ]


# ----------------------------------------------------------------------------- figures


def _fronts_figure(pts: _Points, objectives: list[str]) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    shown = list(range(min(len(objectives), MAX_PANEL_OBJECTIVES)))
    pairs = []
    for ix, iy in itertools.combinations(shown, 2):  # accuracy up the y axis when in the pair
        pairs.append((iy, ix) if objectives[ix] == "accuracy" else (ix, iy))
    pairs = pairs or [(0, 0)]
    ncols = 1 if len(pairs) == 1 else 2 if len(pairs) <= 4 else 3
    nrows = -(-len(pairs) // ncols)
    titles = [f"{objectives[iy]} vs {objectives[ix]}" for ix, iy in pairs]
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=titles,
                        horizontal_spacing=0.09, vertical_spacing=0.16 if nrows > 1 else 0.1)
    for k, (ix, iy) in enumerate(pairs):
        row, col = k // ncols + 1, k % ncols + 1
        for name, trials, marker in _groups(pts):
            if not trials:
                continue
            fig.add_trace(go.Scatter(
                x=[t.values[ix] for t in trials], y=[t.values[iy] for t in trials],
                mode="markers", name=name, legendgroup=name, showlegend=k == 0,
                visible="legendonly" if trials is pts.partial else True, marker=marker,
                text=[_hover(t, objectives) for t in trials],
                hovertemplate="%{text}<extra></extra>"), row=row, col=col)
        for axis, i in (("x", ix), ("y", iy)):
            update = fig.update_xaxes if axis == "x" else fig.update_yaxes
            update(title_text=_label(objectives[i]), row=row, col=col,
                   **_axis(objectives[i], i, pts))
    height = 400 * nrows + 120
    fig.update_layout(height=height, margin={"t": 110, "b": 50, "l": 60, "r": 20},
                      legend={"orientation": "h", "x": 0, "xanchor": "left",
                              "yanchor": "bottom", "y": 1 + 55 / (height - 160)},
                      template="plotly_white")
    return fig


def _front3d_figure(pts: _Points, objectives: list[str]) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, trials, marker in _groups(pts):
        if not trials:
            continue
        m = dict(marker, size=max(2, marker["size"] // 2))
        over = trials is pts.over_budget or trials is pts.partial
        fig.add_trace(go.Scatter3d(
            x=[t.values[0] for t in trials], y=[t.values[1] for t in trials],
            z=[t.values[2] for t in trials], mode="markers", name=name, marker=m,
            text=[_hover(t, objectives) for t in trials], hovertemplate="%{text}<extra></extra>",
            visible="legendonly" if over else True))
    axes = {f"{a}axis": {"title": {"text": _label(objectives[i])}, **_axis(objectives[i], i, pts)}
            for i, a in enumerate("xyz")}
    fig.update_layout(scene={**axes, "aspectmode": "cube",
                             "camera": {"eye": {"x": 1.45, "y": 1.45, "z": 0.95}}}, height=720,
                      margin={"t": 10, "b": 10, "l": 10, "r": 10}, template="plotly_white",
                      legend={"x": 0, "y": 1})
    return fig


def _hv_figure(trace: Any) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    hours = trace.train_hours[-1] if trace.train_hours else 0.0
    panels = [("trial number", trace.numbers), ("trainings (full-budget equivalents)",
                                                 trace.trainings)]
    if hours > 0:
        panels.append(("cumulative training hours", trace.train_hours))
    fig = make_subplots(rows=1, cols=len(panels), shared_yaxes=True, horizontal_spacing=0.05,
                        subplot_titles=[f"vs {p[0]}" for p in panels])
    for k, (title, xs) in enumerate(panels):
        fig.add_trace(go.Scatter(x=xs, y=trace.hypervolume, mode="lines",
                                 line={"shape": "hv", "color": FEASIBLE, "width": 2},
                                 customdata=trace.numbers, showlegend=False,
                                 hovertemplate="after trial %{customdata}: %{y:.4f}<extra>"
                                 "</extra>"), row=1, col=k + 1)
        fig.update_xaxes(title_text=title, row=1, col=k + 1)
    fig.update_yaxes(title_text="hypervolume (normalized)", row=1, col=1)
    fig.update_layout(height=380, margin={"t": 50, "b": 50, "l": 60, "r": 20},
                      template="plotly_white")
    return fig


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _dimension(label: str, values: list[Any], *, log: bool = False,
               dist: Any = None) -> dict[str, Any]:
    """A parallel-coordinates axis over the parameter's whole domain (``dist``, when
    given): numbers as they are (a log range as log10, labelled in real units); other
    choices as categories."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    choices = list(dist.choices) if isinstance(dist, CategoricalDistribution) else None
    if not all(map(_number, values)) or (choices and not all(map(_number, choices))):
        cats = [str(c) for c in choices] if choices else sorted({str(v) for v in values})
        index = {c: i for i, c in enumerate(cats)}
        return {"label": label, "values": [index[str(v)] for v in values],
                "tickvals": list(range(len(cats))), "ticktext": cats,
                "range": [-0.5, len(cats) - 0.5]}
    ends: list[Any] = list(values)
    if isinstance(dist, (IntDistribution, FloatDistribution)):
        ends, log = [dist.low, dist.high], dist.log
    elif choices:
        ends = choices
    scale = math.log10 if log else float
    lo, hi = scale(min(ends)), scale(max(ends))
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    dim: dict[str, Any] = {"label": label, "values": [scale(v) for v in values],
                           "range": [lo, hi]}
    if choices and len(choices) <= 12:
        ticks = sorted(choices)
    elif isinstance(dist, IntDistribution) and not log and dist.high - dist.low <= 12:
        ticks = list(range(dist.low, dist.high + 1, dist.step))
    elif log:
        ticks = [10 ** (lo + (hi - lo) * k / 4) for k in range(5)]
    else:
        return dim
    return dim | {"tickvals": [scale(v) for v in ticks], "ticktext": list(map(fmt_value, ticks))}


def _pareto_params(front: list[FrozenTrial], order: list[str]) -> tuple[list[str], list[str],
                                                                        int]:
    """The parameters every Pareto design has, split into (varying, constant), in space
    order, and how many parameters only some of them have."""
    if not front:
        return [], [], 0
    common = set.intersection(*(set(t.params) for t in front))
    some = set.union(*(set(t.params) for t in front)) - common
    rank = {name: i for i, name in enumerate(order)}
    names = sorted(common, key=lambda n: (rank.get(n, len(rank)), n))
    varying = [n for n in names if len({repr(t.params[n]) for t in front}) > 1]
    return varying, [n for n in names if n not in varying], len(some)


def _parcoords_figure(front: list[FrozenTrial], objectives: list[str],
                      params: list[str]) -> Any:
    import plotly.graph_objects as go

    dims = [_dimension(p, [t.params[p] for t in front], dist=front[0].distributions.get(p))
            for p in params]
    for i, o in enumerate(objectives):
        log = _logged(o, front, i)
        dims.append(_dimension(("log " if log else "") + _label(o),
                               [t.values[i] for t in front], log=log))
    colour = [t.values[0] for t in front]
    fig = go.Figure(go.Parcoords(
        dimensions=dims, labelangle=-30, labelside="top",
        line={"color": colour, "colorscale": "Bluered", "showscale": True,
              "colorbar": {"title": {"text": objectives[0]}}}))
    fig.update_layout(height=560, margin={"t": 150, "b": 40, "l": 60, "r": 40})
    return fig


def _importances(read: StudyView, cfg: ExperimentConfig) -> dict[str, dict[str, float] | str]:
    """Objective -> parameter importances (fANOVA over the feasible COMPLETE designs, one
    trial per design), or a note saying why there are none."""
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    study = read.study
    ok = read.full([g[0] for g in by_design(t for t in read.complete
                                            if feasible(t)).values()])
    objectives = list(cfg.objectives)
    if len(ok) < MIN_IMPORTANCE_DESIGNS:
        note = (f"too few feasible finished designs ({len(ok)}; at least "
                f"{MIN_IMPORTANCE_DESIGNS} are needed)")
        return {o: note for o in objectives}
    sub = optuna.create_study(directions=study.directions)
    sub.add_trials(ok)
    out: dict[str, dict[str, float] | str] = {}
    for i, name in enumerate(objectives):
        values = {t.values[i] for t in ok}
        if len(values) == 1:
            out[name] = (f"takes a single value ({fmt_value(values.pop())}) over the "
                         f"{len(ok)} feasible designs")
            continue
        try:
            imp = get_param_importances(sub, evaluator=FanovaImportanceEvaluator(seed=0),
                                        target=lambda t, i=i: t.values[i])
        except (ValueError, RuntimeError, ZeroDivisionError) as e:
            out[name] = f"not computed ({e})"
            continue
        out[name] = (dict(imp) if imp else
                     "no parameter takes more than one value in every feasible design")
    return out


def _importance_figure(imps: dict[str, dict[str, float] | str]) -> Any | None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    shown = {o: v for o, v in imps.items() if isinstance(v, dict)}
    if not shown:
        return None
    fig = make_subplots(rows=1, cols=len(shown), subplot_titles=list(shown),
                        horizontal_spacing=0.12)
    for k, values in enumerate(shown.values()):
        top = sorted(values.items(), key=lambda kv: -kv[1])[:TOP_IMPORTANCES][::-1]
        fig.add_trace(go.Bar(x=[v for _, v in top], y=[n for n, _ in top], orientation="h",
                             marker_color=FEASIBLE, showlegend=False,
                             hovertemplate="%{y}: %{x:.3f}<extra></extra>"), row=1, col=k + 1)
        fig.update_xaxes(title_text="importance (fANOVA)", range=[0, 1], row=1, col=k + 1)
    fig.update_layout(height=90 + 32 * min(TOP_IMPORTANCES, max(map(len, shown.values()))),
                      margin={"t": 60, "b": 50, "l": 10, "r": 20}, template="plotly_white")
    fig.update_yaxes(automargin=True)
    return fig


# ----------------------------------------------------------------------------- the document


def _pareto_rows(read: StudyView, front: list[FrozenTrial]) -> tuple[list[str],
                                                                     list[list[str]]]:
    """Columns and cells of the Pareto table (as :func:`codesign.report.pareto_table`:
    trial, the later trials of the same design, metrics, design)."""
    shared = repeats(read)
    rows = []
    for t in front:
        again = shared.get(t.number)
        rows.append({"trial": t.number, **({"also": ",".join(map(str, again))} if again
                                           else {}), **metrics(t), **design_summary(t)})
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    return cols, [[fmt_value(r.get(c)) for c in cols] for r in rows]


@dataclass(frozen=True)
class _Report:
    doc: dict[str, Any]  # codesign.report.summary
    cfg: ExperimentConfig
    points: _Points
    trace: Any
    importances: dict[str, dict[str, float] | str]
    varying: list[str]
    constant: list[str]
    partial_params: int
    columns: list[str]
    cells: list[list[str]]
    generated: str


def _collect(study: optuna.Study, cfg: ExperimentConfig, storage_url: str) -> _Report:
    read = StudyView(study)  # the study read once
    pts = _points(read)
    varying, constant, partial = _pareto_params(pts.pareto, list(cfg.space.distributions()))
    cols, cells = _pareto_rows(read, pts.pareto)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return _Report(doc=summary(read, cfg, storage_url), cfg=cfg, points=pts,
                   trace=hypervolume_trace(read.trials, cfg),
                   importances=_importances(read, cfg), varying=varying, constant=constant,
                   partial_params=partial, columns=cols, cells=cells, generated=now)


def _header_rows(r: _Report) -> list[tuple[str, str]]:
    doc, c = r.doc, r.doc["cache"]
    states = ", ".join(f"{v} {k}" for k, v in doc["trials_by_state"].items() if v)
    hv = doc["hypervolume"]
    hours = r.trace.train_hours[-1] if r.trace.train_hours else 0.0
    rows = [
        ("study", doc["study"]),
        ("storage", doc["storage"]),
        ("objectives", ", ".join(f"{o} ({d})" for o, d in zip(doc["objectives"],
                                                                doc["directions"]))),
        ("budgets", ", ".join(f"{k} <= {fmt_value(v)}" for k, v in doc["constraints"].items())
         or "none"),
        ("strategy / sampler", f"{r.cfg.strategy.name} / {r.cfg.sampler.name}"),
        ("trials by state", states or "no trials"),
        ("distinct finished designs", f"{doc['distinct_complete']} (target "
                                      f"{doc['n_trials_target']})"),
        ("feasible finished trials", str(doc["feasible_complete"])),
        ("Pareto set", f"{len(r.points.pareto)} distinct design(s)"),
        ("hypervolume", f"{hv['value']:.4f} (normalized; reference "
         + ", ".join(f"{k}={fmt_value(v)}" for k, v in hv["reference"].items())
         + (", fixed by the experiment" if hv["fixed"] else ", the study's own") + ")"),
        ("trainings", f"{c['trainings']} ({hours:.3g} h of training), {c['hits']} "
                      f"training-cache hits (hit rate {c['hit_rate']:.0%}), "
                      f"{c['infeasible_not_trained']} over budget and never trained, "
                      f"{c['warm_started']} warm-started, {c['repeats']} repeated proposals"),
    ]
    for name, b in doc["best"].items():
        rows.append((f"best {name}", f"{fmt_value(b['value'])} (trial {b['trial']})"))
    if doc["failures"]:
        counts: dict[str, int] = {}
        for f in doc["failures"]:
            reason = f"{f['state']}: {f['reason'] or 'no reason recorded'}"
            counts[reason] = counts.get(reason, 0) + 1
        top = sorted(counts.items(), key=lambda kv: -kv[1])[:5]
        rows.append(("failures", "; ".join(f"{n} x {reason}" for reason, n in top)))
    prov = doc.get("provenance") or {}
    if prov.get("codesign") or prov.get("git"):
        rows.append(("written by", ", ".join(f"{k} {v}" for k, v in prov.items()
                                             if k in ("codesign", "git") and v)))
    rows.append(("report generated", r.generated))
    return rows


CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;max-width:1360px;
padding:16px 24px;color:#222}
h1{font-size:1.6em;margin:.2em 0}h2{font-size:1.25em;margin:1.6em 0 .3em;border-bottom:1px
solid #ddd;padding-bottom:.2em}
p.note{color:#555;font-size:.9em;margin:.2em 0 .6em;max-width:1100px}
table{border-collapse:collapse;font-size:.85em}td,th{padding:3px 8px;border-bottom:1px solid
#eee;text-align:right;white-space:nowrap}th{background:#f6f6f6;position:sticky;top:0}
table.head td{text-align:left;white-space:normal}table.head td:first-child{color:#555;
font-weight:600;white-space:nowrap}tbody tr:hover{background:#fff6e0}
nav a{margin-right:1em}.scroll{overflow-x:auto;max-width:100%}
"""


def _table_html(cols: list[str], cells: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in row) + "</tr>"
                   for row in cells)
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>" \
           "</table></div>"


def _fig_html(fig: Any, div_id: str) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})


def _html(r: _Report, study_name: str) -> str:
    from plotly.offline import get_plotlyjs

    objs = list(r.cfg.objectives)
    pts = r.points
    e = html.escape
    sections: list[tuple[str, str, str]] = []  # (anchor, title, body)
    head = "".join(f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in _header_rows(r))
    sections.append(("summary", "Summary", f"<table class='head'>{head}</table>"))
    note = ("One point per distinct design (hover for its trial and design). Red: the Pareto "
            f"set over all {len(objs)} objectives" + ("; a red point that looks dominated in "
                                                      "a panel is better in an objective off "
                                                      "its axes" if len(objs) > 2 else "")
            + ". Blue: feasible, dominated. Grey "
            "crosses: over a budget (priced, never trained); their accuracy is a placeholder, "
            "so the accuracy axes show the trained designs' range (double-click a panel to "
            "see all). Designs of successive halving's lower rungs (trained on part of the "
            "budget) are hidden: click them in the legend. Click a legend entry to hide or "
            "show a group; drag to zoom.")
    if len(objs) > MAX_PANEL_OBJECTIVES:
        note += f" Panels show the first {MAX_PANEL_OBJECTIVES} objectives."
    sections.append(("fronts", "Pairwise fronts",
                     f"<p class='note'>{e(note)}</p>" + _fig_html(
                         _fronts_figure(pts, objs), "fig-fronts")))
    if len(objs) >= 3:
        body = (f"<p class='note'>{e(', '.join(objs[:3]))}: the Pareto set (red) over the "
                "dominated feasible cloud (blue); designs over a budget are hidden (click "
                "them in the legend). Drag to rotate.</p>"
                + _fig_html(_front3d_figure(pts, objs), "fig-front3d"))
    else:
        body = (f"<p class='note'>The study has {len(objs)} objectives: no 3-D front.</p>")
    sections.append(("front3d", "3-D front", body))
    hv = r.doc["hypervolume"]
    ref = ", ".join(f"{k}={fmt_value(v)}" for k, v in hv["reference"].items())
    sections.append(("hypervolume", "Hypervolume", (
        "<p class='note'>Fraction of the box between the ideal point and the reference "
        f"({e(ref)}) that the feasible designs dominate, after each finished trial; against "
        "trials, trainings spent and, where recorded, hours of training. Only full-budget, "
        "feasible designs count.</p>" + _fig_html(_hv_figure(r.trace), "fig-hv"))))
    if pts.pareto:
        note = ("One line per Pareto design: the parameters that differ among them, then "
                f"the objectives; colour: {objs[0]}. Drag along an axis to filter.")
        if r.constant:
            note += " Same in every Pareto design: " + ", ".join(
                f"{n}={t}" for n, t in ((n, pts.pareto[0].params[n]) for n in r.constant)) + "."
        if r.partial_params:
            note += (f" {r.partial_params} parameter(s) that only some of them have (e.g. of "
                     "stages the others lack) are left out.")
        body = f"<p class='note'>{e(note)}</p>" + _fig_html(
            _parcoords_figure(pts.pareto, objs, r.varying), "fig-parcoords")
    else:
        body = "<p class='note'>The Pareto set is empty (no feasible finished trial).</p>"
    sections.append(("parcoords", "Pareto designs: parallel coordinates", body))
    notes = "".join(f"<li>{e(o)}: {e(v)}</li>" for o, v in r.importances.items()
                    if isinstance(v, str))
    fig = _importance_figure(r.importances)
    body = ("<p class='note'>fANOVA importance of each parameter for each objective over the "
            "feasible finished designs (one trial per design), normalized to sum to 1 per "
            f"objective; the top {TOP_IMPORTANCES} shown. Parameters that only some designs "
            "have are left out.</p>")
    body += (_fig_html(fig, "fig-importance") if fig is not None else "")
    body += f"<ul class='note'>{notes}</ul>" if notes else ""
    sections.append(("importance", "Parameter importances", body))
    body = (_table_html(r.columns, r.cells) if r.cells else
            "<p class='note'>The Pareto set is empty (no feasible finished trial).</p>")
    if any("also" == c for c in r.columns):
        body = "<p class='note'>also: later trials that proposed the same design.</p>" + body
    sections.append(("pareto", f"Pareto table ({len(r.cells)} distinct designs)", body))
    nav = "".join(f"<a href='#{a}'>{e(t)}</a>" for a, t, _ in sections)
    main = "".join(f"<h2 id='{a}'>{e(t)}</h2>{b}" for a, t, b in sections)
    title = e(f"{study_name}: codesign report")
    return (f"{HTML_HEAD}<title>{title}</title><style>{CSS}</style>"
            f"<script type='text/javascript'>{get_plotlyjs()}</script>\n"
            f"<h1>{title}</h1><nav>{nav}</nav>{main}\n")


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_table(cols: list[str], cells: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(c) for c in cols) + " |",
             "|" + "|".join(":---" if k == 0 and cols[0] == "parameter" else "---:"
                            for k in range(len(cols))) + "|"]
    return lines + ["| " + " | ".join(_md_cell(x) for x in row) + " |" for row in cells]


def _markdown(r: _Report, study_name: str, html_name: str | None) -> str:
    lines = [MD_HEAD, f"# {study_name}: codesign report", ""]
    if html_name:
        lines += [f"Interactive figures (fronts, 3-D front, hypervolume, parallel coordinates, "
                  f"importances): [{html_name}]({html_name.replace(' ', '%20')}).", ""]
    lines += ["| | |", "|---|---|"]
    lines += [f"| {_md_cell(k)} | {_md_cell(v)} |" for k, v in _header_rows(r)]
    t = r.trace
    if t.numbers:
        lines += ["", "## Hypervolume", ""]
        marks = sorted({t.numbers[max(0, math.ceil(len(t.numbers) * f) - 1)]
                        for f in (0.25, 0.5, 0.75, 1.0)})
        at = {n: k for k, n in enumerate(t.numbers)}
        lines += _md_table(["after trial", "trainings", "training hours", "hypervolume"],
                           [[str(n), fmt_value(t.trainings[at[n]]),
                             f"{t.train_hours[at[n]]:.3g}", f"{t.hypervolume[at[n]]:.4f}"]
                            for n in marks])
    lines += ["", "## Parameter importances (fANOVA, feasible designs)", ""]
    shown = {o: v for o, v in r.importances.items() if isinstance(v, dict)}
    if shown:
        total = {p: sum(v.get(p, 0.0) for v in shown.values())
                 for v in shown.values() for p in v}
        top = sorted(total, key=lambda p: -total[p])[:TOP_IMPORTANCES]
        lines += _md_table(["parameter", *shown],
                           [[p, *(f"{v.get(p, 0.0):.3f}" for v in shown.values())]
                            for p in top])
    for o, v in r.importances.items():
        if isinstance(v, str):
            lines.append(f"- {o}: {v}")
    lines += ["", f"## Pareto set ({len(r.cells)} distinct designs)", ""]
    if r.cells:
        if "also" in r.columns:
            lines += ["also: later trials that proposed the same design.", ""]
        lines += _md_table(r.columns, r.cells)
    else:
        lines.append("Empty: no feasible finished trial yet.")
    return "\n".join(lines) + "\n"


def build_report(study: optuna.Study, cfg: ExperimentConfig, storage_url: str, *,
                 html_name: str | None = None) -> tuple[str, str]:
    """The report of ``study`` as ``(html, markdown)``; the Markdown links to ``html_name``
    (the HTML file's name beside it) when given. Reads the study only."""
    r = _collect(study, cfg, storage_url)
    return _html(r, study.study_name), _markdown(r, study.study_name, html_name)


def _claim_markdown(path: Path, option: str) -> Path:
    """``path`` if a Markdown report may be written there: new, or a report codesign wrote
    (it begins with :data:`MD_HEAD`); otherwise as :func:`codesign.files.claim_file`."""
    if path.is_file() and not path.is_symlink():
        try:
            with open(path, "rb") as f:
                if f.read(len(MD_HEAD)) == MD_HEAD.encode():
                    return path
        except OSError:
            pass
    return claim_file(path, option)


def write_report(study: optuna.Study, cfg: ExperimentConfig, storage_url: str, *,
                 out: str | os.PathLike[str],
                 markdown: str | os.PathLike[str] | None = None) -> tuple[Path, Path]:
    """Write the report to ``out`` (``.html``) and ``markdown`` (default: ``out`` with
    ``.md``), each atomically. Returns both paths.

    Raises:
        OutputError: a name with another ending, both the same file, or a path that is not
            new and not a report codesign wrote (nothing is written then).
    """
    out = Path(out)
    md = Path(markdown) if markdown is not None else out.with_suffix(".md")
    if out.suffix.lower() not in (".html", ".htm"):
        raise OutputError(f"--out: {out}: the file must end in .html")
    if md.suffix.lower() not in (".md", ".markdown"):
        raise OutputError(f"--markdown: {md}: the file must end in .md")
    if os.path.abspath(out) == os.path.abspath(md):
        raise OutputError(f"--markdown: {md}: is the --out file")
    claim_file(out, "--out")
    _claim_markdown(md, "--markdown")
    rel = os.path.relpath(out.resolve(), md.resolve().parent)
    text, md_text = build_report(study, cfg, storage_url, html_name=Path(rel).as_posix())
    write_atomic(out, text)
    write_atomic(md, md_text)
    return out, md
