"""Pareto-front and hypervolume-history figures of a study (PNG, or HTML embedding it).

The front is drawn as pairwise panels of the objectives (of the first four, when there are
more): a design on the Pareto front of all objectives can look dominated in one panel, and
the panel's colour (the objective not on its axes) shows why. Positive objectives other than
accuracy (latency, energy, area, power) are drawn on log scales, colours included, so that a
few outliers do not flatten the rest.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import math
import os
from pathlib import Path
from typing import Any

import optuna

from codesign.config import ExperimentConfig
from codesign.errors import OutputError
from codesign.files import HTML_HEAD, PLOT_MARK, claim_file, write_atomic
from codesign.report import (
    StudyView,
    feasible,
    full_budget,
    hypervolume_history,
    pareto_table,
    view,
)

MAX_PANEL_OBJECTIVES = 4  # pairs of the first four objectives: at most six panels


def _figure(study: optuna.Study | StudyView, cfg: ExperimentConfig, *,
            as_figure: bool = False) -> Any:
    """The figure as PNG bytes (``as_figure``: the matplotlib ``Figure``)."""
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogFormatterSciNotation, LogLocator, NullFormatter

    read = view(study)
    study = read.study
    objs = list(cfg.objectives)
    # one point per design: repeats lie on top of their first trial
    distinct = [g[0] for g in read.groups.values()]
    ok = [t for t in distinct if feasible(t)]
    bad = [t for t in distinct if not feasible(t) and full_budget(t)]  # lower rungs: left out
    front = read.pareto

    shown = objs[:MAX_PANEL_OBJECTIVES]
    pairs = list(itertools.combinations(range(len(shown)), 2)) or [(0, 0)]
    n_panels = len(pairs) + 1  # + the hypervolume history
    ncols = min(n_panels, 3 if n_panels > 4 else 2)
    nrows = -(-n_panels // ncols)
    # a bare Figure (no pyplot: no GUI backend, no global registry) with constrained
    # layout, laid out in the one draw that saving makes (``tight_layout`` drew it twice)
    fig = Figure(figsize=(6.2 * ncols, 4.6 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    flat = list(axes.flat)

    def logged(name: str) -> bool:
        return name != "accuracy"

    for ax, (ix, iy) in zip(flat, pairs):
        # accuracy up the y axis where it is in the pair; otherwise the first on x
        if objs[ix] == "accuracy":
            ix, iy = iy, ix
        x_name, y_name = objs[ix], objs[iy]
        rest = [i for i in range(len(objs)) if i not in (ix, iy)]
        ic = rest[0] if rest else None
        if bad:
            ax.scatter([t.values[ix] for t in bad], [t.values[iy] for t in bad], marker="x",
                       c="0.7", label=f"infeasible ({len(bad)})", zorder=1)
        if ok:
            kw: dict = {}
            if ic is not None:
                colours = [t.values[ic] for t in ok]
                positive = logged(objs[ic]) and min(colours) > 0
                norm = (LogNorm if positive else Normalize)(min(colours), max(colours))
                kw = {"c": colours, "cmap": "viridis", "norm": norm}
            sc = ax.scatter([t.values[ix] for t in ok], [t.values[iy] for t in ok], s=28,
                            label=f"feasible ({len(ok)})", zorder=2, **kw)
            if ic is not None:
                fig.colorbar(sc, ax=ax, label=objs[ic] + (" (log)" if positive else ""))
        if front:
            ax.scatter([t.values[ix] for t in front], [t.values[iy] for t in front], s=90,
                       facecolors="none", edgecolors="crimson", linewidths=1.5,
                       label=f"Pareto set ({len(front)})", zorder=3)
        for name, setter, axis in ((x_name, ax.set_xscale, ax.xaxis),
                                   (y_name, ax.set_yscale, ax.yaxis)):
            values = [t.values[objs.index(name)] for t in distinct]
            if logged(name) and all(v > 0 for v in values):
                setter("log")
                # Matplotlib labels 2, 3, 4, 6 x 10^k on a span of about a decade, and
                # they overlap: label 2 and 5 x 10^k below two decades, else none
                if max(values) < 100 * min(values):
                    axis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
                    axis.set_minor_formatter(LogFormatterSciNotation(
                        labelOnlyBase=False, minor_thresholds=(math.inf, math.inf)))
                else:
                    axis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(x_name)
        ax.set_ylabel(y_name)
        ax.set_title(f"{y_name} vs {x_name}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="best", fontsize=7)

    ax2 = flat[len(pairs)]
    numbers, hv, _ = hypervolume_history(read, cfg)
    ax2.step(numbers, hv, where="post", color="tab:blue")
    ax2.set_xlabel("trial number")
    ax2.set_ylabel("hypervolume (normalized)")
    ax2.set_title("hypervolume history", fontsize=10)
    ax2.grid(True, alpha=0.3)
    for ax in flat[n_panels:]:
        ax.set_visible(False)
    note = (f"{study.study_name}: ringed designs are Pareto-optimal over all "
            f"{len(objs)} objectives ({', '.join(objs)}); one that looks dominated in a "
            "panel is better in an objective off its axes (the colour)")
    if len(objs) > MAX_PANEL_OBJECTIVES:
        note += f"; panels show the first {MAX_PANEL_OBJECTIVES} objectives"
    fig.suptitle(note, fontsize=9, wrap=True)
    if as_figure:
        return fig
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": PLOT_MARK.decode()})
    return buf.getvalue()


def plot_study(study: optuna.Study, cfg: ExperimentConfig, out: str | os.PathLike[str]) -> Path:
    """Write the figure to ``out`` (``.png``, or ``.html`` with the PNG and the Pareto table).

    ``out`` may be new or a figure codesign wrote before; any other file is refused
    (:func:`codesign.files.claim_file`).
    """
    out = Path(out)
    if out.suffix.lower() not in (".png", ".html"):
        raise OutputError(f"--out: {out}: the file must end in .png or .html")
    claim_file(out, "--out")
    read = StudyView(study)  # the study read once, for the figure and the table
    png = _figure(read, cfg)
    if out.suffix.lower() == ".png":
        data = png
    else:
        img = base64.b64encode(png).decode()
        table = html.escape(pareto_table(read, cfg))
        data = (f"{HTML_HEAD}<title>{html.escape(study.study_name)}"
                f"</title><h1>{html.escape(study.study_name)}</h1>"
                f"<img src='data:image/png;base64,{img}'><pre>{table}</pre>\n").encode()
    write_atomic(out, data)
    return out
