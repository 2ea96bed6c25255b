#!/usr/bin/env python3
"""How ``codesign inspect / plot / export`` scale with the number of trials of a study.

Builds realistic studies of 1,000 / 5,000 / 10,000 trials without training anything, then
times the commands as a user runs them (each a fresh ``codesign`` process: wall time includes
Python start-up and imports) and records each one's peak resident memory::

    python benchmarks/read_scale.py                          # 1k, 5k, 10k trials, SQLite
    python benchmarks/read_scale.py --trials 10000 --storage journal
    python benchmarks/read_scale.py --keep /tmp/read-scale   # reuse the built studies

How a study is built. A real small study is run once (``codesign run
experiments/quickstart.yaml --n-trials 8``, Ray and a few brief trainings; about 20 s) to
get trials exactly as the driver records them: every user attribute (``codesign.design``,
``codesign.hw``, the per-layer costs ``codesign.layers``, ...), the constraint values in
the system attribute the driver writes, parameters and distributions, and the study's user
attributes (the stored experiment ``inspect`` rebuilds its configuration from, provenance,
artifacts folder). Its trials are then replicated with varied values, written as the rows
``study.add_trials`` writes, in one bulk insert (``--slow-build``: through ``add_trials``
itself, about 90 ms a trial) and read back through Optuna's public API to check they are
exactly the trials made:

- ``--designs`` distinct designs (default trials / 25: 400 at 10,000 trials); each is one
  of the real trials with its accelerator's DRAM bandwidth changed (a new design key,
  computed as the driver does), its objective values drawn on a noisy trade-off surface
  (about 50 Pareto designs at 400 designs) and its hardware totals set to match; about a
  quarter over a budget (accuracy 0, positive constraint value, never trained), some
  training-cache hits and warm starts. The network and its training key are the real
  trial's, so export finds the real weights file (its test accuracy is real);
- the other trials repeat an earlier design, as the driver records a repeated proposal
  (``codesign.repeat_of``, the first trial's values and attributes);
- about 2 % FAIL (a reason recorded) and 1 % PRUNED (unmappable);
- start and completion times 10 s apart, two workers' worth of overlap, so that the order
  trials finished differs from their numbers.

The journal study (``--storage journal``) is a copy of the SQLite one
(``optuna.copy_study``), as ``journal:FILE.log``.

Each command's peak RSS is the child's own (``os.wait4``), in MB (10^6 bytes).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

NAME = "quickstart"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0"}
A = "codesign."


def _codesign(*args: str) -> list[str]:
    return [sys.executable, "-m", "codesign", *args]


# ----------------------------------------------------------------------------- building


def seed_study(work: Path) -> Path:
    """A real 8-design quickstart study (trained briefly), made once per ``work`` folder."""
    db = work / "seed.db"
    if db.exists():
        return db
    print(f"running a real 8-design quickstart study into {db} (about 20 s) ...",
          file=sys.stderr)
    out = subprocess.run(
        _codesign("run", str(REPO / "experiments" / "quickstart.yaml"), "--n-trials", "8",
                  "--workers", "2", "--no-progress", "--storage", f"sqlite:///{db}"),
        cwd=work, env=ENV, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        sys.exit(f"the seed study failed:\n{out.stderr}")
    return db


def _design_key(design: dict) -> str:
    from evaluators.specs import DesignPoint

    return DesignPoint.from_dict(design).design_key()


def synth_trials(seed_db: Path, n: int, n_designs: int, rng: random.Random) -> list:
    """``n`` FrozenTrials replicated from the seed study's (see the module docstring)."""
    import optuna
    from optuna.trial import FrozenTrial, TrialState

    seed = optuna.load_study(study_name=NAME, storage=f"sqlite:///{seed_db}")
    done = [t for t in seed.get_trials() if t.state == TrialState.COMPLETE]
    good = [t for t in done if t.user_attrs.get(A + "feasible")]
    over = [t for t in done if not t.user_attrs.get(A + "feasible")] or good
    if not good:
        sys.exit("the seed study has no feasible trial")
    n_designs = max(1, min(n_designs, n))
    firsts = sorted({0, *rng.sample(range(1, n), n_designs - 1)}) if n > 1 else [0]
    first_set = set(firsts)
    t0 = dt.datetime(2025, 1, 1, 8, 0, 0)
    trials: list[FrozenTrial] = []
    known: list[FrozenTrial] = []  # first trials of the designs so far (COMPLETE or not)
    for number in range(n):
        start = t0 + dt.timedelta(seconds=10 * number)
        finish = start + dt.timedelta(seconds=rng.uniform(5.0, 25.0))  # two workers overlap
        if number in first_set or not known:
            roll = rng.random()
            if roll < 0.02:
                t = _failed(rng.choice(done), number, start, finish, rng, TrialState.FAIL)
            elif roll < 0.03:
                t = _failed(rng.choice(done), number, start, finish, rng, TrialState.PRUNED)
            else:
                t = _new_design(rng.choice(good if roll > 0.25 else over), number, start,
                                finish, rng, feasible=roll > 0.25)
            known.append(t)
        else:
            t = _repeat(rng.choice(known), number, start, finish)
        trials.append(t)
    return trials


def _vary(design: dict, rng: random.Random) -> tuple[dict, float]:
    d = copy.deepcopy(design)
    gbps = round(math.exp(rng.uniform(math.log(1.0), math.log(16.0))), 9)
    d["accelerator"]["dram_gbps"] = gbps
    return d, gbps


def _base(src, number, start, finish, rng, state, values, user, system):
    from optuna.trial import FrozenTrial

    design, gbps = _vary(src.user_attrs[A + "design"], rng)
    params = {**src.params, "hw/dram_gbps": gbps}
    user = {**user, A + "design": design, A + "design_key": _design_key(design),
            A + "driver": "bench:1"}
    return FrozenTrial(number=number, state=state, value=None, values=values,
                       datetime_start=start, datetime_complete=finish, params=params,
                       distributions=dict(src.distributions), user_attrs=user,
                       system_attrs=system, intermediate_values={}, trial_id=number)


def _new_design(src, number, start, finish, rng, *, feasible: bool):
    from optuna.trial import TrialState

    user = copy.deepcopy(src.user_attrs)
    # a noisy trade-off surface: accuracy rises with latency and energy spent
    lat = math.exp(rng.uniform(math.log(0.0015), math.log(0.05)))
    energy = math.exp(rng.uniform(math.log(5e-5), math.log(5e-3)))
    acc = (0.55 + 0.09 * math.log10(lat / 0.0015) + 0.09 * math.log10(energy / 5e-5)
           + rng.gauss(0.0, 0.07))
    acc = min(max(acc, 0.05), 0.995)
    hw = user[A + "hw"]
    hw["latency_ms"], hw["energy_mj"] = lat, energy
    names = user.get(A + "constraint_names", ["area_mm2", "power_w"])
    if feasible:
        constraints = [-rng.uniform(0.01, 0.4) for _ in names]
        user[A + "accuracy"] = acc
        roll = rng.random()
        if roll < 0.1:  # a training-cache hit: priced with the cached training
            user[A + "trained"], user[A + "cached"] = False, True
            user.pop(A + "train_seconds", None)
        elif roll < 0.2:
            user[A + "warm_from"], user[A + "warm_tensors"] = "checkpoint", 4
    else:
        acc = 0.0
        constraints = [rng.uniform(0.01, 0.3), -rng.uniform(0.01, 0.3)][:len(names)]
        user.update({A + "accuracy": 0.0, A + "feasible": False, A + "trained": False,
                     A + "cached": False,
                     A + "infeasible_reason": f"area_mm2 {0.5 + constraints[0]:.2f} > "
                                              "budget 0.5"})
        for k in ("train_seconds", "train_steps", "train_loss", "device", "weights"):
            user.pop(A + k, None)
    system = {"NSGAIISampler:generation": number // 12, "constraints": constraints}
    return _base(src, number, start, finish, rng, TrialState.COMPLETE, [acc, lat, energy],
                 user, system)


def _failed(src, number, start, finish, rng, state):
    from optuna.trial import TrialState

    user = {A + "training_key": src.user_attrs.get(A + "training_key"), A + "attempts": 2}
    if state == TrialState.FAIL:
        user[A + "fail_reason"] = rng.choice([
            "TrainingDiverged: the training loss is not finite (nan) at step 37",
            "worker died: ray.exceptions.WorkerCrashedError: The worker died unexpectedly"])
    else:
        user[A + "fail_reason"] = "unmappable: the layer s0b0 does not fit the 8 KiB buffer"
        user[A + "fail_final"] = True
    system = {"NSGAIISampler:generation": number // 12}
    return _base(src, number, start, finish, rng, state, None, user, system)


def _repeat(first, number, start, finish):
    from optuna.trial import FrozenTrial, TrialState

    user = {k: v for k, v in first.user_attrs.items()
            if k[len(A):] in ("design", "design_key", "training_key", "feasible",
                              "infeasible_reason", "accuracy", "hw", "layers",
                              "input_density", "weights", "constraint_names")}
    user[A + "repeat_of"] = first.number
    user[A + "driver"] = "bench:1"
    system = {"NSGAIISampler:generation": number // 12}
    if first.state != TrialState.COMPLETE:
        user = {A + "repeat_of": first.number, A + "design": first.user_attrs[A + "design"],
                A + "design_key": first.user_attrs[A + "design_key"],
                A + "fail_reason": first.user_attrs.get(A + "fail_reason", "")}
        values = None
    else:
        user[A + "trained"], user[A + "cached"] = False, False
        system["constraints"] = list(first.system_attrs["constraints"])
        values = list(first.values)
    return FrozenTrial(number=number, state=first.state, value=None, values=values,
                       datetime_start=start, datetime_complete=finish,
                       params=dict(first.params), distributions=dict(first.distributions),
                       user_attrs=user, system_attrs=system, intermediate_values={},
                       trial_id=number)


def _bulk_insert(db: Path, trials: list) -> None:
    """Insert ``trials`` into the one (new, empty) study of ``db`` with the rows
    ``study.add_trials`` writes, in one transaction (``add_trials`` takes about 90 ms a
    trial: 15 minutes for 10,000). :func:`_check_stored` reads them back through Optuna."""
    import sqlalchemy as sa
    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models

    def utc(t: dt.datetime | None) -> dt.datetime | None:  # as TrialModel's setters store
        return None if t is None else t.astimezone(dt.timezone.utc).replace(tzinfo=None)

    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as con:
        (study_id,) = con.execute(sa.select(models.StudyModel.study_id)).one()
        first = (con.execute(sa.select(sa.func.max(models.TrialModel.trial_id))).scalar()
                 or 0) + 1
        rows: dict[str, list[dict]] = {"trials": [], "values": [], "params": [], "user": [],
                                       "system": []}
        finite = models.TrialValueModel.TrialValueType.FINITE
        for i, t in enumerate(trials):
            tid = first + i
            rows["trials"].append({"trial_id": tid, "number": t.number, "study_id": study_id,
                                   "state": t.state, "datetime_start": utc(t.datetime_start),
                                   "datetime_complete": utc(t.datetime_complete)})
            rows["values"] += [{"trial_id": tid, "objective": k, "value": v,
                                "value_type": finite} for k, v in enumerate(t.values or [])]
            rows["params"] += [{"trial_id": tid, "param_name": k,
                                "param_value": t.distributions[k].to_internal_repr(v),
                                "distribution_json": distribution_to_json(t.distributions[k])}
                               for k, v in t.params.items()]
            rows["user"] += [{"trial_id": tid, "key": k, "value_json": json.dumps(v)}
                             for k, v in t.user_attrs.items()]
            rows["system"] += [{"trial_id": tid, "key": k, "value_json": json.dumps(v)}
                               for k, v in t.system_attrs.items()]
        for table, key in ((models.TrialModel, "trials"), (models.TrialValueModel, "values"),
                           (models.TrialParamModel, "params"),
                           (models.TrialUserAttributeModel, "user"),
                           (models.TrialSystemAttributeModel, "system")):
            if rows[key]:
                con.execute(sa.insert(table.__table__), rows[key])
    engine.dispose()


def _check_stored(db: Path, trials: list) -> None:
    """The stored trials read back through Optuna's public API are ``trials``."""
    import optuna

    stored = optuna.load_study(study_name=NAME, storage=f"sqlite:///{db}").get_trials(
        deepcopy=False)
    assert len(stored) == len(trials), (len(stored), len(trials))
    for a, b in zip(stored, trials):
        for field in ("number", "state", "values", "params", "distributions", "user_attrs",
                      "system_attrs", "datetime_start", "datetime_complete"):
            assert getattr(a, field) == getattr(b, field), (a.number, field)


def build(work: Path, n: int, kind: str, n_designs: int | None, seed: int,
          slow_build: bool = False) -> str:
    """The storage URL of a built study of ``n`` trials (reused when ``work`` has it)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    designs = n_designs or max(20, n // 25)
    db = work / f"study-{n}-{designs}-{seed}.db"
    url = f"sqlite:///{db}"
    if not db.exists():
        seed_db = seed_study(work)
        began = time.perf_counter()
        trials = synth_trials(seed_db, n, designs, random.Random(seed))
        src = optuna.load_study(study_name=NAME, storage=f"sqlite:///{seed_db}")
        part = db.with_suffix(".part")
        part.unlink(missing_ok=True)
        study = optuna.create_study(study_name=NAME, storage=f"sqlite:///{part}",
                                    directions=src.directions)
        with warnings.catch_warnings():  # experimental in Optuna 5, as the driver calls it
            warnings.simplefilter("ignore")
            study.set_metric_names(src.metric_names)
        for k, v in src.user_attrs.items():
            study.set_user_attr(k, v)
        study.set_user_attr(A + "artifacts_dir", str(work / "seed-artifacts"))
        study.set_user_attr(A + "n_trials_target", designs)
        if slow_build:
            study.add_trials(trials)
        else:
            _bulk_insert(part, trials)
        _check_stored(part, trials)
        part.rename(db)
        print(f"built {n} trials ({designs} designs) in {time.perf_counter() - began:.0f} s",
              file=sys.stderr)
    if kind == "sqlite":
        return url
    log = db.with_suffix(".log")
    if not log.exists():
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        part = log.with_suffix(".part")
        part.unlink(missing_ok=True)
        optuna.copy_study(from_study_name=NAME, from_storage=url,
                          to_storage=JournalStorage(JournalFileBackend(str(part))))
        part.rename(log)
    return f"journal:{log}"


# ----------------------------------------------------------------------------- timing


def timed(cmd: list[str], cwd: Path, out_file: Path) -> tuple[float, float, float, int]:
    """Wall seconds, CPU seconds, peak RSS (MB) and exit code of ``cmd`` as a child
    process."""
    with open(out_file, "w") as out:
        began = time.perf_counter()
        p = subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(p.pid, 0)
        seconds = time.perf_counter() - began
    p.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    return seconds, cpu, usage.ru_maxrss * 1024 / 1e6, p.returncode


def commands(url: str, tmp: Path, test_accuracy: bool) -> list[tuple[str, list[str]]]:
    s = ["--storage", url]
    cmds = [
        ("inspect --json", _codesign("inspect", NAME, *s, "--json")),
        ("inspect", _codesign("inspect", NAME, *s)),
        ("plot --out x.png", _codesign("plot", NAME, *s, "--out", str(tmp / "x.png"))),
        ("export --no-test-accuracy",
         _codesign("export", NAME, *s, "--out", str(tmp / "exp-fast"), "--overwrite",
                   "--no-test-accuracy")),
    ]
    if test_accuracy:
        cmds.append(("export (test accuracy)",
                     _codesign("export", NAME, *s, "--out", str(tmp / "exp-full"),
                               "--overwrite")))
    return cmds


def _build_apart(work: Path, n: int, args: argparse.Namespace) -> str:
    """:func:`build` in a process of its own: a child forked from a process that holds a
    built study would count that memory in its peak RSS (Linux keeps the high-water mark
    across ``exec``), so this process stays small."""
    cmd = [sys.executable, __file__, "--build-only", str(n), "--keep", str(work),
           "--storage", args.storage, "--seed", str(args.seed)]
    cmd += ["--designs", str(args.designs)] if args.designs else []
    cmd += ["--slow-build"] if args.slow_build else []
    out = subprocess.run(cmd, env=ENV, stdout=subprocess.PIPE, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", default="1000,5000,10000",
                   help="comma-separated study sizes (default %(default)s)")
    p.add_argument("--storage", default="sqlite", choices=["sqlite", "journal"])
    p.add_argument("--designs", type=int, help="distinct designs (default trials / 25)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=1, help="runs per command; the fastest "
                   "is reported (default %(default)s)")
    p.add_argument("--keep", metavar="DIR", help="build in (and reuse) DIR instead of a "
                   "temporary folder")
    p.add_argument("--slow-build", action="store_true", help="build through "
                   "study.add_trials (about 90 ms a trial) rather than one bulk insert of "
                   "the same rows")
    p.add_argument("--no-test-accuracy", action="store_true",
                   help="leave out the export that re-evaluates test accuracy")
    p.add_argument("--save-json", metavar="DIR", help="also keep each study's inspect "
                   "--json output in DIR (inspect-<trials>.json), to compare versions")
    p.add_argument("--build-only", type=int, metavar="TRIALS", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.build_only:  # what _build_apart runs
        print(build(Path(args.keep), args.build_only, args.storage, args.designs, args.seed,
                    args.slow_build))
        return 0
    work = Path(args.keep or tempfile.mkdtemp(prefix="read-scale-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    sizes = [int(x) for x in args.trials.split(",") if x.strip()]
    rows = []
    try:
        for n in sizes:
            url = _build_apart(work, n, args)
            tmp = work / f"out-{n}"
            tmp.mkdir(exist_ok=True)
            for label, cmd in commands(url, tmp, not args.no_test_accuracy):
                best = None
                for _ in range(args.repeat):
                    log = tmp / "last.out"
                    sec, cpu, mb, rc = timed(cmd, work, log)
                    if rc != 0:
                        sys.exit(f"{label} failed ({rc}):\n{log.read_text()[-3000:]}")
                    if best is None or sec < best[0]:
                        best = (sec, cpu, mb)
                    if label == "inspect --json" and args.save_json:
                        Path(args.save_json).mkdir(parents=True, exist_ok=True)
                        shutil.copy(log, Path(args.save_json) / f"inspect-{n}.json")
                assert best is not None
                rows.append((n, label, *best))
                print(f"{n:>6}  {label:<27} {best[0]:7.2f} s  {best[1]:7.2f} s CPU  "
                      f"{best[2]:7.0f} MB", file=sys.stderr)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nstorage: {args.storage}; wall seconds (fastest of {args.repeat}; CPU seconds "
          "in brackets) and peak RSS")
    print(f"{'command':<27} " + " ".join(f"{f'{n:,} trials':>28}" for n in sizes))
    for label in dict.fromkeys(r[1] for r in rows):
        cells = []
        for n in sizes:
            hit = [r for r in rows if r[0] == n and r[1] == label]
            cells.append(f"{hit[0][2]:6.2f} s ({hit[0][3]:5.2f}) {hit[0][4]:6.0f} MB"
                         if hit else "-")
        print(f"{label:<27} " + " ".join(f"{c:>28}" for c in cells))
    print(json.dumps([{"trials": n, "command": c, "seconds": round(s, 3),
                       "cpu_seconds": round(u, 3), "peak_mb": round(m)}
                      for n, c, s, u, m in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
