"""Export the Pareto designs of a study: one folder per design plus an index.

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

The export is written to a temporary folder and moved into place at the end, so an
interrupted export leaves nothing half-written.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import optuna
import yaml

from codesign.config import ExperimentConfig
from codesign.errors import CodesignError
from codesign.report import metrics, pareto_trials
from codesign.study import ATTR_PROVENANCE, A
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


def _layer_costs_csv(layers: list[dict[str, Any]]) -> str:
    if not layers:
        return ""
    cols = [k for k, v in layers[0].items() if not isinstance(v, (dict, list))]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(layers)
    return buf.getvalue()


def export_study(
    study: optuna.Study,
    cfg: ExperimentConfig,
    out: str | os.PathLike[str],
    *,
    fmt: str = "yaml",
    storage_url: str = "",
    test_accuracy: bool = True,
    overwrite: bool = False,
) -> list[dict[str, Any]]:
    """Write the Pareto designs of ``study`` under ``out``; returns the index rows.

    Raises:
        CodesignError: ``out`` exists (without ``overwrite``) or the study has no Pareto set.
    """
    if fmt not in FORMATS:
        raise CodesignError(f"--format: must be one of {list(FORMATS)}, got {fmt!r}")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise CodesignError(f"{out}: exists and is not empty (use --overwrite)")
    trials = pareto_trials(study)
    if not trials:
        raise CodesignError(f"study {study.study_name!r} has no feasible finished trial to "
                            "export yet")
    spec_fmt = "json" if fmt == "json" else "yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        rows = [_export_one(t, cfg, tmp, spec_fmt, study, storage_url, test_accuracy)
                for t in trials]
        if fmt == "csv":
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
            (tmp / "index.csv").write_text(buf.getvalue())
        else:
            index = {"study": study.study_name, "storage": storage_url,
                     "objectives": list(cfg.objectives), "designs": rows}
            (tmp / f"index.{fmt}").write_text(_dump(index, fmt))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return rows


def _export_one(
    t: optuna.trial.FrozenTrial,
    cfg: ExperimentConfig,
    root: Path,
    fmt: str,
    study: optuna.Study,
    storage_url: str,
    want_test: bool,
) -> dict[str, Any]:
    design = DesignPoint.from_dict(t.user_attrs[A + "design"])
    folder = root / f"trial_{t.number:04d}"
    folder.mkdir()
    (folder / f"network.{fmt}").write_text(_dump(design.network.to_dict(), fmt))
    (folder / f"accelerator.{fmt}").write_text(_dump(design.accelerator.to_dict(), fmt))
    (folder / "layers.csv").write_text(scalesim_topology(design, cfg.task.deploy_input))
    (folder / "layer_costs.csv").write_text(_layer_costs_csv(t.user_attrs.get(A + "layers", [])))
    weights = t.user_attrs.get(A + "weights")
    test_acc, test_note = None, None
    if weights and Path(weights).is_file():
        shutil.copyfile(weights, folder / "weights.pt")
        if want_test:
            from evaluators.training import evaluate_accuracy

            try:
                test_acc = evaluate_accuracy(design.network, cfg.task,
                                             Path(weights).read_bytes(), split="test")
            except Exception as e:  # noqa: BLE001 - recorded, export goes on
                test_note = f"not computed: {type(e).__name__}: {e}"
    else:
        test_note = f"no weights file ({weights!r})"
    m = metrics(t)
    doc = {
        "trial": t.number,
        "values": dict(zip(cfg.objectives, t.values)),
        "validation_accuracy": m["accuracy"],
        "test_accuracy": test_acc,
        **({"test_accuracy_note": test_note} if test_note else {}),
        "hardware": t.user_attrs.get(A + "hw", {}),
        # the non-zero input fraction per layer that training measured and the hardware
        # was priced with (null: dense); layers.csv stays SCALE-Sim's format without it
        "input_density": t.user_attrs.get(A + "input_density"),
        "constraints": dict(t.constraints),
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
    }
