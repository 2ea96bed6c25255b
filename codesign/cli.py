"""``codesign`` command line: a thin layer over the library, one function per subcommand.

Exit codes: 0 success; 2 bad input (one ``error: <file>: <key>: <what>`` line per problem,
no traceback unless ``--debug``); 1 an evaluation or internal failure; 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

EPILOG = """\
examples:
  codesign validate experiments/quickstart.yaml
  codesign run experiments/quickstart.yaml            # study in sqlite:///runs/quickstart.db
  codesign inspect quickstart --json
  codesign export quickstart --out exports/quickstart
  codesign plot quickstart --out runs/quickstart.png
  codesign report quickstart --out runs/quickstart.html   # and runs/quickstart.md
  codesign resume quickstart --n-trials 80            # continue to 80 finished designs
  codesign params experiments/quickstart.yaml --json > p.json
  codesign evaluate experiments/quickstart.yaml --params p.json
  codesign hw --accelerator experiments/accelerators/edge_systolic.yaml \\
              --layers experiments/layers/resnet18_conv2.csv
"""


class UsageError(Exception):
    """Bad command-line input that argparse cannot see (exit 2)."""


def _storage_for(name: str, storage: str | None) -> str:
    from codesign.study import default_url

    return storage or default_url(name)


def _open_named(name: str, storage: str | None) -> tuple[Any, Any, str]:
    from codesign.api import load_study

    return load_study(name, _storage_for(name, storage))


# ----------------------------------------------------------------------------- commands


def cmd_validate(args: argparse.Namespace) -> int:
    from codesign.config import load
    from codesign.urls import display_url

    cfg = load(args.experiment)
    n = len(cfg.space.distributions())
    print(f"ok: {args.experiment}: study {cfg.study.name!r}, {cfg.study.n_trials} trials, "
          f"objectives {list(cfg.objectives)}, {n} searched parameters, sampler "
          f"{cfg.sampler.name}, storage {display_url(cfg.study.storage)}")
    return 0


def _run(cfg: Any, study: Any, url: str, args: argparse.Namespace, target: int) -> int:
    """Run (or continue) ``study`` to ``--n-trials`` (default ``target``) distinct designs
    and print what the session did and the Pareto table."""
    from codesign.api import session
    from codesign.report import pareto_table
    from codesign.study import artifacts_dir, suggest
    from codesign.urls import display_url

    flags: list[str] = []  # what `resume NAME` would not know of this session
    if args.n_trials is not None and args.n_trials != cfg.study.n_trials:
        flags += ["--n-trials", str(args.n_trials)]
    if args.ray_address and args.ray_address != cfg.execution.ray_address:
        flags += ["--ray-address", args.ray_address]
    if args.workers is not None and args.workers != cfg.execution.workers:
        flags += ["--workers", str(args.workers)]
    n_trials = target if args.n_trials is None else args.n_trials
    name = study.study_name
    summary = session(cfg, study, url, n_trials=n_trials, workers=args.workers,
                      ray_address=args.ray_address, progress=not args.no_progress,
                      resume_flags=flags)
    if summary.nothing_to_do:
        more = str(max(summary.complete, n_trials) + 20)
        print(f"study {name!r} in {display_url(url)} already has {summary.complete} finished "
              f"designs (target {n_trials}): nothing to do; "
              f"{suggest('resume', name, url, '--n-trials', more)} goes further")
        print(pareto_table(study, cfg))
        return 0
    unit = "networks" if cfg.strategy.solves_hardware else "designs"
    pairs = (f", {summary.pairs_now} further (network, accelerator) pairs recorded"
             if cfg.strategy.solves_hardware else "")
    print(f"study {name!r} in {display_url(url)}: {summary.complete} finished {unit}; "
          f"this session, in {summary.seconds:.1f} s: {summary.trained_now} trained{pairs}, "
          f"{summary.cache_hits_now} from the training cache, {summary.over_budget_now} over "
          f"budget (priced, never trained), {summary.unmappable_now} unmappable, "
          f"{summary.repeats_now} repeated proposals (told their first trial's outcome), "
          f"{summary.failed_now} failed, {summary.requeued} re-queued")
    print(f"weights: {artifacts_dir(study, cfg, url)}")
    if summary.exhausted:
        print(f"warning: stopped at {summary.complete} of {n_trials} designs: the sampler "
              "proposed only designs already evaluated (the space may hold no more)",
              file=sys.stderr)
    print(pareto_table(study, cfg))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from codesign.config import load
    from codesign.samplers import make
    from codesign.study import create_or_load, is_default_location, open_storage

    cfg = load(args.experiment)
    if args.resume:
        return _resume_from_file(cfg, args)
    url = args.storage or cfg.study.storage
    make(cfg.sampler, seed=cfg.study.seed)  # its options are checked before any file is made
    from codesign.runner import precheck

    precheck(cfg, local=not (args.ray_address or cfg.execution.ray_address),
             ray_address=args.ray_address)
    storage = open_storage(url, create_dirs=is_default_location(url))
    study, created = create_or_load(cfg, storage, url, sampler=None)
    if not created:
        print(f"study {cfg.study.name!r} exists with the same experiment: continuing it",
              file=sys.stderr)
    return _run(cfg, study, url, args, cfg.study.n_trials)


def cmd_resume(args: argparse.Namespace) -> int:
    """``resume EXP.yaml`` (an existing file) or ``resume NAME``; a study name may end in
    ``.yaml`` too, when no such file is there."""
    target = args.experiment
    if target.endswith((".yaml", ".yml")) and os.path.isfile(target):
        from codesign.config import load

        return _resume_from_file(load(target), args)
    study, cfg, url = _open_named(target, args.storage)
    return _continue(cfg, study, url, args, cfg.study.n_trials)


def _resume_from_file(file_cfg: Any, args: argparse.Namespace) -> int:
    """Continue the stored study of an experiment file. The file must describe the same
    experiment (execution settings and ``n_trials`` may differ, and are the file's);
    otherwise the keys that differ are named and nothing runs."""
    from codesign.study import create_or_load, load_existing, open_storage, study_exists

    url = args.storage or file_cfg.study.storage
    storage = open_storage(url, must_exist=True)
    name = file_cfg.study.name
    if not study_exists(storage, name):
        load_existing(name, storage, url)  # raises: no study of that name, with the ones there
    study, _ = create_or_load(file_cfg, storage, url, sampler=None)  # raises if it differs
    return _continue(file_cfg, study, url, args, file_cfg.study.n_trials)


def _continue(cfg: Any, study: Any, url: str, args: argparse.Namespace, target: int) -> int:
    from codesign.runner import precheck

    precheck(cfg, local=not (args.ray_address or cfg.execution.ray_address),
             ray_address=args.ray_address)
    return _run(cfg, study, url, args, target)


def cmd_inspect(args: argparse.Namespace) -> int:
    from codesign.urls import display_url

    if args.name is None:
        from codesign.optuna_adapter import trial_count
        from codesign.study import open_storage

        if not args.storage:
            raise UsageError("inspect: give a study NAME or --storage URL to list its studies")
        storage = open_storage(args.storage, must_exist=True)
        rows = [{"study": s.study_name, "trials": trial_count(storage, s),
                 "directions": [d.name.lower() for d in s.directions]}
                for s in storage.get_all_studies()]
        if args.json:
            print(json.dumps({"storage": display_url(args.storage), "studies": rows},
                             indent=2))
        else:
            for r in rows:
                print(f"{r['study']}: {r['trials']} trials, {', '.join(r['directions'])}")
        return 0
    from codesign.report import StudyView, pareto_table, summary

    study, cfg, url = _open_named(args.name, args.storage)
    read = StudyView(study)  # the study read once, for the document and the table
    doc = summary(read, cfg, url)
    if args.json:
        print(json.dumps(doc, indent=2, default=str))
        return 0
    states = ", ".join(f"{v} {k}" for k, v in doc["trials_by_state"].items() if v)
    print(f"study {doc['study']} ({doc['storage']}): {states or 'no trials'}; "
          f"{doc['distinct_complete']} distinct finished designs, target "
          f"{doc['n_trials_target']}")
    pairs = zip(doc["objectives"], doc["directions"])
    print("objectives: " + ", ".join(f"{o} ({d})" for o, d in pairs))
    if doc["constraints"]:
        print("budgets: " + ", ".join(f"{k} <= {v}" for k, v in doc["constraints"].items()))
    hv = doc["hypervolume"]
    print(f"hypervolume: {hv['value']:.4f} (normalized; reference "
          + ", ".join(f"{k}={v:.4g}" for k, v in hv["reference"].items()) + ")")
    for name, b in doc["best"].items():
        print(f"best {name}: {b['value']:.5g} (trial {b['trial']})")
    c = doc["cache"]
    print(f"training cache: {c['trainings']} trainings, {c['hits']} hits "
          f"(hit rate {c['hit_rate']:.0%}), {c['infeasible_not_trained']} infeasible designs "
          f"not trained, {c['warm_started']} trainings warm-started, {c['repeats']} repeated "
          "proposals (told their first trial's outcome)")
    if doc["failures"]:
        print(f"failures ({len(doc['failures'])}):")
        for reason, trials in _grouped(doc["failures"]):
            print(f"  {len(trials)} x {reason} (trials {_numbers(trials)})")
    print(pareto_table(read, cfg))
    return 0


def _grouped(failures: list[dict[str, Any]]) -> list[tuple[str, list[int]]]:
    """Failures grouped by state and reason, most frequent first."""
    groups: dict[str, list[int]] = {}
    for f in failures:
        reason = f"{f['state']}: {f['reason'] or 'no reason recorded'}"
        groups.setdefault(reason, []).append(f["trial"])
    return sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[1][0]))


def _numbers(trials: list[int], most: int = 8) -> str:
    text = ", ".join(map(str, trials[:most]))
    return text + (f", ... ({len(trials) - most} more)" if len(trials) > most else "")


def cmd_export(args: argparse.Namespace) -> int:
    from codesign.api import export

    done = export(args.name, args.out, storage=_storage_for(args.name, args.storage),
                  fmt=args.format, test_accuracy=not args.no_test_accuracy,
                  overwrite=args.overwrite)
    rows = done.rows
    print(f"exported {len(rows)} distinct Pareto design(s) of {args.name!r} to {args.out}")
    if done.kept:
        print(f"kept {len(done.kept)} file(s) codesign did not write: "
              f"{', '.join(done.kept[:5])}" + (" ..." if len(done.kept) > 5 else ""),
              file=sys.stderr)
    missing = [r["folder"] for r in rows if r["test_accuracy"] is None]
    if missing and not args.no_test_accuracy:
        print(f"warning: no test accuracy for {', '.join(missing)} (weights missing or "
              "unreadable; see test_accuracy_note in their metrics file)", file=sys.stderr)
    for r in rows:
        acc = "-" if r["test_accuracy"] is None else f"{r['test_accuracy']:.4f}"
        also = (f" (also trials {', '.join(map(str, r['repeat_trials']))})"
                if r["repeat_trials"] else "")
        print(f"  {r['folder']}: val acc {r['accuracy']:.4f}, test acc {acc}, "
              f"latency {r['latency_ms']:.4g} ms, energy {r['energy_mj']:.4g} mJ{also}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from codesign.plots import plot_study

    study, cfg, _ = _open_named(args.name, args.storage)
    out = plot_study(study, cfg, args.out)
    print(f"wrote {out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from codesign.html_report import write_report

    study, cfg, url = _open_named(args.name, args.storage)
    html_file, md_file = write_report(study, cfg, url, out=args.out, markdown=args.markdown)
    print(f"wrote {html_file} (interactive; opens offline) and {md_file}")
    return 0


def _print_hw(report: Any, as_json: bool) -> None:
    """Print a hardware report (a table, or JSON), an FPGA's resource use in place of area."""
    from codesign.report import text_table

    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
        return
    resources = report.resources
    cols = ["name", "macs", "compute_cycles", "total_cycles", "utilization", "dram_read_bytes",
            "dram_write_bytes", "energy_pj", "latency_ms"]
    rows = [c.to_dict() for c in report.layers] + [report.total.to_dict()]
    cells = [[f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols]
             for r in rows]
    print("\n".join(text_table(cols, cells)))
    if resources is None:
        size = f"area {report.area_mm2:.4g} mm2"
    else:  # an FPGA occupies resources, not mm^2
        size = "uses " + ", ".join(
            f"{name} {r['used']}/{r['available']} ({100 * r['fraction']:.1f} %)"
            for name, r in resources.items() if r["used"] is not None and r["available"]
        )
    print(f"{size}, average power {report.power_w:.4g} W, energy "
          f"{report.energy_mj:.4g} mJ, latency {report.latency_ms:.4g} ms")


def cmd_hw(args: argparse.Namespace) -> int:
    from evaluators.hardware import load_accelerator_yaml, make_model, read_layers_csv

    acc = load_accelerator_yaml(args.accelerator)
    if (args.layers is None) == (args.network is None):
        raise UsageError("hw: give exactly one of --layers CSV or --network NET.yaml")
    if args.layers and args.deploy_input is not None:
        raise UsageError("hw: --deploy-input applies to --network only (a layers CSV has its "
                         "own shapes)")
    layers = (read_layers_csv(args.layers) if args.layers
              else _network_layers(args.network, args.deploy_input))
    _print_hw(make_model(acc).evaluate_network(layers), args.json)
    return 0


def _network_layers(path: str, deploy_input: int | None = None) -> list[Any]:
    """The workload of a network spec file (``network.yaml``/``.json`` as ``export`` writes)."""
    from codesign.config import read_yaml
    from evaluators.specs import NetworkSpec, SpecError
    from evaluators.training import extract_layers

    raw = read_yaml(path)  # JSON is YAML; safe loader, one-line errors
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: (top level): expected a network spec mapping")
    try:
        spec = NetworkSpec.from_dict(raw)
        return list(extract_layers(spec, deploy_input))
    except (TypeError, KeyError, SpecError) as e:
        raise UsageError(f"{path}: network: not a valid network spec ({e})") from None


def _read_params(text: str) -> tuple[str, Any]:
    """``--params``: inline JSON (``{...}``), ``-`` (standard input) or a JSON file.
    Returns ``(where, value)``; ``where`` names the source in error lines."""
    if text.lstrip().startswith("{"):
        where, raw = "--params", text
    elif text == "-":
        where, raw = "<stdin>", sys.stdin.read()
    else:
        where = text
        try:
            raw = Path(text).read_text()
        except FileNotFoundError:
            raise UsageError(f"{text}: file: not found (give a JSON file, inline JSON such "
                             "as '{\"net/stages\": 2}', or - for standard input)") from None
        except OSError as e:
            raise UsageError(f"{text}: file: cannot be read ({e})") from None
    try:
        return where, json.loads(raw)
    except ValueError as e:
        raise UsageError(f"{where}: json: cannot be read ({e})") from None


def cmd_evaluate(args: argparse.Namespace) -> int:
    from codesign.config import load
    from evaluators.evaluate import evaluate
    from search_spaces import SpaceError

    cfg = load(args.experiment)
    where, params = _read_params(args.params)
    if not isinstance(params, dict):
        raise UsageError(f"{where}: (top level): expected a JSON object of parameters "
                         f"(`codesign params {args.experiment} --json` prints one)")
    try:
        cfg.space.check_params(params)
    except SpaceError as e:
        raise UsageError("\n".join(f"{where}: {k}: {m}" for k, m in e.problems)) from None
    design = cfg.space.decode(params)
    result = evaluate(design, cfg.task, cfg.budgets)
    doc = {
        "design": design.to_dict(),
        "feasible": result.feasible,
        "infeasible_reason": result.infeasible_reason,
        "accuracy": result.accuracy,
        "constraints": result.constraints,
        "hardware": result.hardware.to_dict()["total"],
        "training": None if result.training is None else {
            "val_accuracy": result.training.val_accuracy,
            "train_seconds": result.training.train_seconds,
            "steps": result.training.steps, "device": result.training.device,
            "input_density": result.training.input_density},
    }
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        _print_hw(result.hardware, False)
        print(f"feasible: {result.feasible}" + (f" ({result.infeasible_reason})"
                                                 if result.infeasible_reason else ""))
        print(f"validation accuracy: {result.accuracy:.4f}")
    return 0


def cmd_params(args: argparse.Namespace) -> int:
    from codesign.config import load
    from search_spaces.dims import to_yaml

    cfg = load(args.experiment, check_data=False)
    example = cfg.space.example_params()
    if args.json:
        print(json.dumps(example, indent=2))
        return 0
    dims = cfg.space.dims
    cells = [[name, json.dumps(to_yaml(dims[name])), json.dumps(value)]
             for name, value in example.items()]
    from codesign.report import text_table

    print("\n".join(text_table(["parameter", "domain", "example"], cells, rule=True)))
    fixed = cfg.space.fixed()
    print(f"{len(example)} searched parameters; {len(fixed)} fixed in the experiment. "
          f"`codesign params {args.experiment} --json > p.json` writes the example, which "
          f"`codesign evaluate {args.experiment} --params p.json` takes (edit the values "
          "within their domains); net/s<i>/... and cmp/s<i>/... of stages beyond "
          "net/stages are ignored")
    return 0


# ----------------------------------------------------------------------------- parser


def _int_at_least(low: int) -> Any:
    """An argparse type: an integer >= ``low``."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {low}, got {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {v}")
        return v
    return parse


_positive = _int_at_least(1)
_workers = _int_at_least(0)


def cmd_compare(args: argparse.Namespace) -> int:
    from codesign.api import compare, validate
    from codesign.compare import markdown
    from codesign.urls import display_url

    cfg = validate(args.experiment)
    trainings = args.trainings or cfg.study.n_trials
    out = Path(args.out) if args.out else Path("runs") / f"{cfg.study.name}-compare"
    result = compare(cfg, strategies=[s.strip() for s in args.strategies.split(",") if s],
                     seeds=args.seeds, trainings=trainings, storage=args.storage,
                     workers=args.workers, out=out, progress=not args.no_progress,
                     log=lambda line: print(line, file=sys.stderr))
    from codesign.compare import default_storage

    url = args.storage or default_storage(cfg)
    print(f"studies in {display_url(url)}; files in {result.out}")
    print(markdown(result).split("\n", 1)[1].strip())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="codesign",
        description="Hardware/algorithm co-design search for DNN accelerators: one experiment "
        "YAML, a joint network x compression x accelerator space, Optuna multi-objective "
        "search, Ray workers that price each design on an analytical accelerator model and "
        "train it briefly.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, fn: Callable[[argparse.Namespace], int], help: str) -> Any:
        sp = sub.add_parser(name, help=help, description=help)
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks and debug logs")
        sp.set_defaults(func=fn)
        return sp

    sp = add("validate", cmd_validate, "check an experiment YAML; exit 2 with one line per "
             "problem, create nothing")
    sp.add_argument("experiment", help="experiment YAML")

    def run_opts(sp: Any) -> None:
        sp.add_argument("--storage", help="study storage URL (default: the YAML's "
                        "study.storage, else sqlite:///runs/<name>.db)")
        sp.add_argument("--n-trials", type=_positive, help="distinct finished designs to reach "
                        "in total (default: the experiment's study.n_trials)")
        sp.add_argument("--ray-address", help="connect to a running Ray cluster (e.g. "
                        "auto or HOST:6379); default: start a local instance")
        sp.add_argument("--workers", type=_workers,
                        help="evaluations in flight at once, trials waiting for a training "
                        "included (0: one at a time in this process, without Ray)")
        sp.add_argument("--no-progress", action="store_true", help="no progress bar")

    sp = add("run", cmd_run, "create a study from an experiment YAML and run it; prints the "
             "Pareto table at the end (Ctrl-C stops cleanly)")
    sp.add_argument("experiment", help="experiment YAML")
    run_opts(sp)
    sp.add_argument("--resume", action="store_true",
                    help="continue the existing study of this name (as `resume EXP.yaml`: "
                    "the file must describe the stored experiment)")

    sp = add("resume", cmd_resume, "continue a study until it has the requested number of "
             "distinct finished designs; trials left RUNNING by a crash are failed and "
             "re-queued")
    sp.add_argument("experiment", metavar="NAME|EXP.yaml",
                    help="study name (continues its stored experiment) or its YAML (which "
                    "must describe the stored experiment; its execution and n_trials apply)")
    run_opts(sp)

    sp = add("inspect", cmd_inspect, "trial counts, Pareto table, hypervolume, best per "
             "objective, training-cache hit rate; without NAME, list the studies")
    sp.add_argument("name", nargs="?", metavar="NAME")
    sp.add_argument("--storage", help="storage URL (default sqlite:///runs/<NAME>.db)")
    sp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = add("export", cmd_export, "write one folder per Pareto design (network, weights, "
             "accelerator, metrics, SCALE-Sim topology) plus an index")
    sp.add_argument("name", metavar="NAME")
    sp.add_argument("--storage", help="storage URL (default sqlite:///runs/<NAME>.db)")
    sp.add_argument("--out", required=True, help="output folder")
    sp.add_argument("--format", default="yaml", choices=["yaml", "json", "csv"],
                    help="file format of specs and index (default yaml)")
    sp.add_argument("--overwrite", action="store_true",
                    help="replace an earlier codesign export in --out (only the files it "
                    "wrote; any other file there is kept; a folder holding no codesign "
                    "export is never written into)")
    sp.add_argument("--no-test-accuracy", action="store_true",
                    help="skip computing test accuracy of the exported designs")

    sp = add("plot", cmd_plot, "Pareto front and hypervolume history as PNG (or HTML)")
    sp.add_argument("name", metavar="NAME")
    sp.add_argument("--storage", help="storage URL (default sqlite:///runs/<NAME>.db)")
    sp.add_argument("--out", required=True, help="FILE.png or FILE.html (a new file, or one "
                    "codesign plot wrote before)")

    sp = add("report", cmd_report, "one self-contained interactive HTML report of a study "
             "(plotly.js embedded, opens offline): summary, pairwise and 3-D fronts, "
             "hypervolume vs trials, trainings and training hours, parallel coordinates of the "
             "Pareto designs, parameter importances per objective, the Pareto table; plus a "
             "Markdown file with the same tables")
    sp.add_argument("name", metavar="NAME")
    sp.add_argument("--storage", help="storage URL (default sqlite:///runs/<NAME>.db)")
    sp.add_argument("--out", required=True, help="FILE.html (a new file, or one codesign "
                    "wrote before)")
    sp.add_argument("--markdown", metavar="FILE.md", help="the Markdown file (default: "
                    "--out with .md; a new file, or a report codesign wrote before)")

    sp = add("hw", cmd_hw, "the accelerator model alone on a SCALE-Sim topology CSV or on "
             "an exported network spec")
    sp.add_argument("--accelerator", required=True, help="accelerator YAML")
    sp.add_argument("--layers", help="layers CSV (SCALE-Sim topology format; optional "
                    "'Input Density' / 'Weight Density' columns give each layer's non-zero "
                    "fraction, which zero gating uses)")
    sp.add_argument("--network", help="a network spec (network.yaml from `codesign export`)")
    sp.add_argument("--deploy-input", type=_positive, metavar="PIXELS",
                    help="with --network: the square input resolution it is deployed at "
                    "(default: its training resolution)")
    sp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = add("evaluate", cmd_evaluate, "evaluate one design of an experiment's space outside "
             "a study (hardware model, then training)")
    sp.add_argument("experiment", help="experiment YAML")
    sp.add_argument("--params", required=True, metavar="JSON|FILE|-",
                    help="the design's parameter values: inline JSON ('{...}'), a JSON file, "
                    "or - for standard input (`codesign params EXP.yaml --json` prints a "
                    "complete example)")
    sp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = add("params", cmd_params, "list the searched parameters of an experiment's space "
             "with their domains and an example point (--json: the example as the JSON "
             "object `evaluate --params` takes)")
    sp.add_argument("experiment", help="experiment YAML")
    sp.add_argument("--json", action="store_true", help="print the example point as JSON")

    sp = add("compare", cmd_compare, "run search strategies against each other at an equal "
             "budget of trainings, several seeds each, and score them at one fixed reference "
             "point: hypervolume at a quarter, half and all of the budget (mean and spread), best "
             "energy-delay product at iso-accuracy, trials and wall time; writes CSVs, a PNG "
             "of hypervolume vs trainings and a README.md table to --out")
    sp.add_argument("experiment", help="experiment YAML (its study name prefixes the runs' "
                    "studies: NAME.<strategy>.s<seed>)")
    sp.add_argument("--strategies", default="nested,nsga2,tpe,random,decoupled",
                    help="comma-separated: nested, decoupled (optionally :<sampler>, default "
                    "tpe) and the flat samplers nsga2, nsga3, tpe, gp, random, qmc "
                    "(default: %(default)s)")
    sp.add_argument("--seeds", type=_positive, default=3, help="runs per strategy, seeds "
                    "study.seed + 0, 1, ... (default: %(default)s)")
    sp.add_argument("--trainings", type=_positive, help="the budget of each run, in "
                    "trainings (default: the experiment's study.n_trials)")
    sp.add_argument("--storage", help="storage of the runs' studies (default "
                    "sqlite:///runs/<name>-compare.db); an existing run continues to the budget")
    sp.add_argument("--out", help="folder for runs.csv, summary.csv, trace.csv, "
                    "hypervolume.png and README.md (default runs/<name>-compare; new, empty "
                    "or an earlier comparison's)")
    sp.add_argument("--workers", type=_positive, help="evaluations in flight at once")
    sp.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _error_lines(exc: BaseException) -> list[str] | None:
    """The ``error:`` lines for an expected (user-input) exception, else ``None``."""
    from codesign.config import ConfigError
    from codesign.errors import CodesignError
    from evaluators.specs import InputError
    from search_spaces import SpaceError

    if isinstance(exc, ConfigError):
        return exc.lines()
    if isinstance(exc, UsageError):
        return str(exc).splitlines()
    if isinstance(exc, (CodesignError, InputError)):
        return [str(exc)]
    if isinstance(exc, SpaceError):
        return [f"{k}: {m}" for k, m in exc.problems]
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not debug:
        warnings.filterwarnings("ignore")
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # noqa: BLE001 - the one place that turns errors into exits
        from codesign.errors import Interrupted
        from evaluators.specs import EvaluatorError

        if debug:
            raise
        lines = _error_lines(exc)
        if isinstance(exc, Interrupted):
            print(f"error: {exc}", file=sys.stderr)
            return 130
        if lines is not None:
            for line in lines:
                print(f"error: {line}", file=sys.stderr)
            return 2
        from codesign.errors import RunAborted

        if isinstance(exc, RunAborted):
            print(f"error: {exc}", file=sys.stderr)
            return 1
        if isinstance(exc, EvaluatorError):
            print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        print(f"error: internal error: {type(exc).__name__}: {exc} (rerun with --debug for "
              "the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
