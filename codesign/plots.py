"""Pareto-front and hypervolume-history figures of a study (PNG, or HTML embedding it)."""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

import optuna

from codesign.config import ExperimentConfig
from codesign.errors import CodesignError
from codesign.report import feasible, hypervolume_history, pareto_table, pareto_trials


def _figure(study: optuna.Study, cfg: ExperimentConfig) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objs = list(cfg.objectives)
    x_name = next((o for o in ("latency_ms", "energy_mj", "area_mm2", "power_w") if o in objs),
                  objs[-1])
    y_name = "accuracy" if "accuracy" in objs else objs[0]
    c_name = next((o for o in objs if o not in (x_name, y_name)), None)
    ix, iy = objs.index(x_name), objs.index(y_name)
    ic = objs.index(c_name) if c_name else None

    trials = [t for t in study.get_trials(deepcopy=False)
              if t.state == optuna.trial.TrialState.COMPLETE]
    ok = [t for t in trials if feasible(t)]
    bad = [t for t in trials if not feasible(t)]
    front = pareto_trials(study)

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    if bad:
        ax.scatter([t.values[ix] for t in bad], [t.values[iy] for t in bad], marker="x",
                   c="0.7", label=f"infeasible ({len(bad)})", zorder=1)
    if ok:
        kw = {}
        if ic is not None:
            kw = {"c": [t.values[ic] for t in ok], "cmap": "viridis"}
        sc = ax.scatter([t.values[ix] for t in ok], [t.values[iy] for t in ok], s=28,
                        label=f"feasible ({len(ok)})", zorder=2, **kw)
        if ic is not None:
            fig.colorbar(sc, ax=ax, label=c_name)
    if front:
        pts = sorted((t.values[ix], t.values[iy]) for t in front)
        ax.scatter(*zip(*pts), s=90, facecolors="none", edgecolors="crimson", linewidths=1.5,
                   label=f"Pareto set ({len(front)})", zorder=3)
    ax.set_xscale("log")
    ax.set_xlabel(x_name)
    ax.set_ylabel(y_name)
    ax.set_title(f"{study.study_name}: {y_name} vs {x_name}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)

    numbers, hv, _ = hypervolume_history(study, cfg)
    ax2.step(numbers, hv, where="post", color="tab:blue")
    ax2.set_xlabel("trial number")
    ax2.set_ylabel("hypervolume (normalized)")
    ax2.set_title("hypervolume history")
    ax2.grid(True, alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def plot_study(study: optuna.Study, cfg: ExperimentConfig, out: str | os.PathLike[str]) -> Path:
    """Write the figure to ``out`` (``.png``, or ``.html`` with the PNG and the Pareto table)."""
    out = Path(out)
    if out.suffix.lower() not in (".png", ".html"):
        raise CodesignError(f"--out: {out}: the file must end in .png or .html")
    if not out.parent.is_dir():
        raise CodesignError(f"--out: {out}: folder {str(out.parent)!r} does not exist")
    png = _figure(study, cfg)
    if out.suffix.lower() == ".png":
        data = png
    else:
        img = base64.b64encode(png).decode()
        table = html.escape(pareto_table(study, cfg))
        data = (f"<!doctype html><meta charset='utf-8'><title>{html.escape(study.study_name)}"
                f"</title><h1>{html.escape(study.study_name)}</h1>"
                f"<img src='data:image/png;base64,{img}'><pre>{table}</pre>\n").encode()
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out)
    return out
