"""Export the Pareto designs of a study: one folder per distinct design plus an index.

Each ``trial_NNNN/`` folder holds ``network.<fmt>`` (the :class:`NetworkSpec`),
``accelerator.<fmt>`` (the :class:`AcceleratorSpec`), ``metrics.<fmt>`` (objective values,
constraint values, hardware totals, validation accuracy and the test accuracy computed here,
with provenance), ``layers.csv`` (the workload in SCALE-Sim's topology format, padding folded
into the ifmap size as SCALE-Sim has none), ``layer_costs.csv`` (our per-layer costs) and
``weights.pt`` (the trained ``state_dict``). The metrics file also keeps each layer's
non-zero input fraction measured in training (``input_density``), which the hardware was
priced with; ``layers.csv`` leaves it out, as SCALE-Sim 3 reads a ninth column as an N:M
sparsity ratio. ``fmt`` is ``yaml`` or ``json``; with ``csv`` the
index is ``index.csv`` and the per-design files are YAML.

A design that several trials proposed is exported once, under its first trial, with the
others listed as ``repeat_trials``. The export is written to a temporary folder and moved
into place at the end, so an interrupted export leaves nothing half-written; its manifest
(``.codesign-export.json``) lists every file it wrote, and a later ``--overwrite`` replaces
only those (:mod:`codesign.files`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml

from codesign.config import ExperimentConfig
from codesign.errors import CodesignError
from codesign.files import check_folder, check_target, own_weights, publish_folder
from codesign.report import StudyView, constraints_of, metrics, repeats
from codesign.study import ATTR_PROVENANCE, A
from codesign.urls import display_url
from evaluators.specs import DesignPoint

FORMATS = ("yaml", "json", "csv")


def _dump(data: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(data, indent=2, sort_keys=False) + "\n"
    return yaml.safe_dump(data, sort_keys=False)


def scalesim_topology(design: DesignPoint, deploy_input: int | None = None) -> str:
    """The network's workload (at the deployment resolution) as a SCALE-Sim topology CSV
    (padding folded into the ifmap)."""
    from evaluators.training import extract_layers

    buf = io.StringIO()
    buf.write("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
              "Num Filter, Strides,\n")
    for layer in extract_layers(design.network, deploy_input):
        h = layer.ifmap_h + 2 * layer.padding
        w = layer.ifmap_w + 2 * layer.padding
        buf.write(f"{layer.name}, {h}, {w}, {layer.filter_h}, {layer.filter_w}, "
                  f"{layer.channels}, {layer.num_filters}, {layer.stride},\n")
    return buf.getvalue()


# scalar entries of a layer's mapping worth a column: what turns compute_cycles into
# total_cycles (preloads hidden under compute, the binding roofline level)
_MAPPING_COLUMNS = ("preload_cycles_hidden", "compute_cycles_overlapped", "dram_cycles",
                    "glb_cycles", "bound", "dataflow")


def _layer_costs_csv(layers: list[dict[str, Any]]) -> str:
    """Per-layer costs; ``total_cycles`` may be below ``compute_cycles`` where the next
    fold's preload is hidden under this one's (``preload_cycles_hidden``), so
    ``total_cycles = max(compute_cycles_overlapped, glb_cycles, dram_cycles)``."""
    if not layers:
        return ""
    cols = [k for k, v in layers[0].items() if not isinstance(v, (dict, list))]
    at = cols.index("total_cycles") + 1 if "total_cycles" in cols else len(cols)
    extra = [k for k in _MAPPING_COLUMNS if k in layers[0].get("mapping", {})]
    cols[at:at] = extra
    rows = [{**{k: r.get("mapping", {}).get(k) for k in extra}, **r} for r in layers]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_study` wrote: one index row per distinct Pareto design, and the
    files already in the folder that codesign did not write (kept as they were)."""

    rows: list[dict[str, Any]]
    kept: list[str]


def export_study(
    study: optuna.Study,
    cfg: ExperimentConfig,
    out: str | os.PathLike[str],
    *,
    artifacts: Path,
    fmt: str = "yaml",
    storage_url: str = "",
    test_accuracy: bool = True,
    overwrite: bool = False,
) -> ExportResult:
    """Write the distinct Pareto designs of ``study`` under ``out``.

    The export is built in a temporary folder beside ``out`` and moved into place at the
    end. ``out`` may be new, empty, or (with ``overwrite``) an earlier codesign export, of
    which only the files its manifest lists are replaced; anything else is refused before
    any work is done (:mod:`codesign.files`). Weights are copied only from the study's own
    ``artifacts`` folder.

    Raises:
        OutputError: ``out`` may not be written (see above).
        CodesignError: the study has no feasible finished trial.
    """
    if fmt not in FORMATS:
        raise CodesignError(f"--format: must be one of {list(FORMATS)}, got {fmt!r}")
    out = check_target(out, "--out")
    earlier = check_folder(out, "--out", overwrite=overwrite)
    read = StudyView(study)  # the study read once; whole trials of the Pareto designs only
    trials = read.pareto
    if not trials:
        raise CodesignError(f"study {study.study_name!r} has no feasible finished trial to "
                            "export yet")
    shared = repeats(read)
    shown_url = display_url(storage_url)
    spec_fmt = "json" if fmt == "json" else "yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    try:
        rows = [_export_one(t, cfg, tmp, spec_fmt, study, shown_url, test_accuracy,
                            artifacts, shared.get(t.number, [])) for t in trials]
        if fmt == "csv":
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows({**r, "repeat_trials": " ".join(map(str, r["repeat_trials"]))}
                             for r in rows)
            (tmp / "index.csv").write_text(buf.getvalue())
        else:
            index = {"study": study.study_name, "storage": shown_url,
                     "objectives": list(cfg.objectives), "designs": rows}
            (tmp / f"index.{fmt}").write_text(_dump(index, fmt))
        kept = publish_folder(tmp, out, earlier, {"study": study.study_name,
                                                  "storage": shown_url})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(rows, kept)


def _export_one(
    t: optuna.trial.FrozenTrial,
    cfg: ExperimentConfig,
    root: Path,
    fmt: str,
    study: optuna.Study,
    storage_url: str,
    want_test: bool,
    artifacts: Path,
    repeat_trials: list[int],
) -> dict[str, Any]:
    design = DesignPoint.from_dict(t.user_attrs[A + "design"])
    folder = root / f"trial_{t.number:04d}"
    folder.mkdir()
    (folder / f"network.{fmt}").write_text(_dump(design.network.to_dict(), fmt))
    (folder / f"accelerator.{fmt}").write_text(_dump(design.accelerator.to_dict(), fmt))
    (folder / "layers.csv").write_text(scalesim_topology(design, cfg.task.deploy_input))
    (folder / "layer_costs.csv").write_text(_layer_costs_csv(t.user_attrs.get(A + "layers", [])))
    weights = t.user_attrs.get(A + "weights")
    own = own_weights(weights, artifacts, t.user_attrs.get(A + "training_key"))
    test_acc, test_note = None, None
    if own is not None:
        data = own.read_bytes()
        (folder / "weights.pt").write_bytes(data)
        if want_test:
            from evaluators.training import evaluate_accuracy

            try:
                test_acc = evaluate_accuracy(design.network, cfg.task, data, split="test")
            except Exception as e:  # noqa: BLE001 - recorded, export goes on
                test_note = f"not computed: {type(e).__name__}: {e}"
    elif weights and Path(weights).exists():
        test_note = (f"weights {weights!r} are not the study's own weights file (weights/"
                     f"<training key>.pt in its artifacts folder {str(artifacts)!r}): not "
                     "copied")
    else:
        test_note = f"no weights file ({weights!r})"
    m = metrics(t)
    doc = {
        "trial": t.number,
        "repeat_trials": repeat_trials,  # later trials that proposed the same design
        "values": dict(zip(cfg.objectives, t.values)),
        "validation_accuracy": m["accuracy"],
        "test_accuracy": test_acc,
        **({"test_accuracy_note": test_note} if test_note else {}),
        "hardware": t.user_attrs.get(A + "hw", {}),
        # the non-zero input fraction per layer that training measured and the hardware
        # was priced with (null: dense); layers.csv stays SCALE-Sim's format without it
        "input_density": t.user_attrs.get(A + "input_density"),
        "constraints": constraints_of(t),
        "budgets": {k: v for k, v in cfg.budgets.to_dict().items() if v is not None},
        "params": dict(t.params),
        "provenance": {
            "study": study.study_name,
            "storage": storage_url,
            "trial_number": t.number,
            "training_key": t.user_attrs.get(A + "training_key"),
            "task": cfg.resolved["task"],
            "seed": cfg.study.seed,
            "finished_utc": t.datetime_complete.isoformat() if t.datetime_complete else None,
            **study.user_attrs.get(ATTR_PROVENANCE, {}),
        },
    }
    (folder / f"metrics.{fmt}").write_text(_dump(doc, fmt))
    return {
        "trial": t.number,
        "folder": folder.name,
        **{k: v for k, v in m.items()},
        "test_accuracy": test_acc,
        "repeat_trials": repeat_trials,
    }
