#!/usr/bin/env python3
"""Kill the driver with SIGKILL at random moments, resume each time, and check the study.

A small study of real trainings (digits, real Ray, SQLite by default) is started with
``codesign run``; once its first trial has finished, the driver is killed with SIGKILL at
``--kills`` random moments: each session is killed a random 0-6 s after it has trials in
flight (so that kills land while trainings run and results are being told), each session being a
``codesign resume``; a last ``resume`` runs to the end. Then the study must hold:

- exactly ``n_trials`` distinct finished designs, none RUNNING;
- no finished training discarded: no trial that trained is left anything but COMPLETE,
  and every weights file the driver wrote belongs to a COMPLETE trial;
- the stored experiment (config and fingerprint) unchanged.

It prints one line per kill and the checks; exit code 1 if a check fails::

    python benchmarks/driver_kill.py                 # 10 kills, ~4 min
    python benchmarks/driver_kill.py --kills 3 --storage journal
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0"}

EXP = {
    "schema_version": 1,
    "study": {"name": "kill", "seed": 7, "n_trials": 40},
    "objectives": ["accuracy", "latency_ms", "energy_mj"],
    "sampler": {"name": "nsga2"},
    "task": {"dataset": "digits", "steps": 800, "batch_size": 32},
    "space": {
        "network": {"stages": 1, "depth": [1, 2], "width": [8, 12, 16, 24], "kernel": 3},
        "compression": {"weight_bits": [4, 8], "activation_bits": 8, "prune_ratio": 0.0},
        "accelerator": {"dataflow": ["ws", "os"], "pe_rows": [8, 16], "pe_cols": [8, 16]},
    },
    "execution": {"workers": 2},
}


def study_state(url: str, pid: int | None = None) -> tuple[int, int, dict]:
    """(distinct finished designs, trials RUNNING (of driver ``pid``, if given), study
    attributes)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from codesign.study import open_storage

    try:
        study = optuna.load_study(study_name="kill", storage=open_storage(url))
    except (KeyError, Exception):  # noqa: BLE001 - not made yet
        return 0, 0, {}
    trials = study.get_trials(deepcopy=False)
    done = {t.user_attrs.get("codesign.design_key") for t in trials
            if t.state.name == "COMPLETE"}
    running = sum(t.state.name == "RUNNING" and (
        pid is None or str(t.user_attrs.get("codesign.driver", "")).endswith(f":{pid}"))
        for t in trials)
    return len(done), running, dict(study.user_attrs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--storage", choices=["sqlite", "journal"], default="sqlite")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory(prefix="kill") as d:
        tmp = Path(d)
        (tmp / "exp.yaml").write_text(yaml.safe_dump(EXP))
        url = (f"sqlite:///{tmp}/kill.db" if args.storage == "sqlite"
               else f"journal:{tmp}/kill.log")
        base = [sys.executable, "-m", "codesign"]
        run = [*base, "run", "exp.yaml", "--storage", url, "--no-progress"]
        resume = [*base, "resume", "kill", "--storage", url, "--no-progress"]
        proc = subprocess.Popen(run, cwd=tmp, env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        while study_state(url)[0] == 0:  # the first trial finished
            time.sleep(0.3)
            if proc.poll() is not None:
                print("the first session ended before a trial finished")
                return 1
        config = {k: v for k, v in study_state(url)[2].items()
                  if k in ("codesign.experiment", "codesign.fingerprint")}
        print(f"{'kill':>4} {'after s':>8} {'finished':>9} {'running at kill':>16}")
        for k in range(args.kills):
            if k:
                proc = subprocess.Popen(resume, cwd=tmp, env=ENV, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
            t0 = time.monotonic()
            while study_state(url, proc.pid)[1] == 0 and proc.poll() is None \
                    and time.monotonic() - t0 < 120:
                time.sleep(0.2)  # until this session has trials in flight
            time.sleep(rng.uniform(0.0, 6.0))  # then a random moment
            wait = time.monotonic() - t0
            done, running, _ = study_state(url, proc.pid)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait()
            print(f"{k + 1:>4} {wait:>8.1f} {done:>9} {running:>16}")
        last = subprocess.run(resume, cwd=tmp, env=ENV, capture_output=True, text=True,
                              timeout=900)
        import optuna

        from codesign.study import open_storage

        study = optuna.load_study(study_name="kill", storage=open_storage(url))
        trials = study.get_trials(deepcopy=False)
        done = [t for t in trials if t.state.name == "COMPLETE"
                and "codesign.repeat_of" not in t.user_attrs]
        keys = {t.user_attrs["codesign.design_key"] for t in done}
        running = [t.number for t in trials if t.state.name == "RUNNING"]
        half_told = [t.number for t in trials if t.user_attrs.get("codesign.trained")
                     and t.state.name != "COMPLETE"]
        named = {Path(t.user_attrs["codesign.weights"]).name for t in trials
                 if t.state.name == "COMPLETE" and t.user_attrs.get("codesign.weights")}
        files = {p.name for p in (tmp / "kill-artifacts").rglob("*.pt")}
        orphans = sorted(files - named)
        now = {k: v for k, v in study.user_attrs.items()
               if k in ("codesign.experiment", "codesign.fingerprint")}
        failed = sum(t.state.name == "FAIL" for t in trials)
        checks = {
            f"last resume exit 0 ({last.returncode})": last.returncode == 0,
            f"distinct finished designs = n_trials ({len(keys)} of {EXP['study']['n_trials']})":
                len(keys) == EXP["study"]["n_trials"] == len(done),
            f"none RUNNING ({running})": not running,
            f"no trained trial left unfinished ({half_told})": not half_told,
            f"every weights file belongs to a finished trial (orphans: {orphans})":
                not orphans,
            "stored experiment unchanged": now == config,
        }
        print(f"\n{len(trials)} trials: {len(done)} finished designs, {failed} failed (the "
              "in-flight ones at each kill, re-queued)")
        for text, ok in checks.items():
            print(f"  {'ok  ' if ok else 'FAIL'} {text}")
        if not all(checks.values()):
            print(last.stdout[-1500:], last.stderr[-2000:])
            for t in trials:
                print(t.number, t.state.name, t.user_attrs.get("codesign.design_key"),
                      t.user_attrs.get("codesign.repeat_of"),
                      str(t.user_attrs.get("codesign.fail_reason"))[:90])
            from codesign.optuna_adapter import claims

            for name, h in sorted(claims(study).items()):
                print(name, h)
        return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
