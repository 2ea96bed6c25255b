"""What a new user hit (issue 12), one section per defect; each test failed before its fix.

The end-to-end part drives the real CLI, real local Ray and a real SQLite file on one small
study (``nu``) kept in a non-default storage folder: run to 6 designs with ``--n-trials``,
then resumed to the YAML's 12. Its space (32 designs) has over-budget and unmappable
designs, and the random sampler proposes some designs twice.
"""

from __future__ import annotations

import csv
import gzip
import inspect
import io
import json
import pickle
import shlex
import shutil
import socket
import sqlite3
import struct
import subprocess
import sys
import time
import tracemalloc
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import yaml
from cli_helpers import ENV, ROOT, codesign
from optuna.trial import TrialState

from codesign.cli import build_parser, main
from codesign.config import ConfigError, from_mapping, load
from codesign.report import pareto_trials
from codesign.samplers import make
from codesign.study import open_storage
from evaluators.specs import DatasetError, InputError

# names added by the fixes are imported inside the tests, so that each test fails on its own
# on the code from before them

NU = {
    "schema_version": 1,
    "study": {"name": "nu", "seed": 3, "n_trials": 12},
    "objectives": ["accuracy", "latency_ms", "energy_mj"],
    "constraints": {"area_mm2": 0.3},
    "sampler": {"name": "random"},
    "task": {"dataset": "digits", "epochs": 1, "batch_size": 64},
    "space": {
        "network": {"stages": 1, "depth": 1, "width": [8, 16], "kernel": 3},
        "compression": {"weight_bits": 8, "activation_bits": 8, "prune_ratio": 0.0},
        # glb_kib 0.5 cannot hold an os tile on the 32-row arrays: unmappable designs;
        # area_mm2 0.3 leaves the larger arrays over budget
        "accelerator": {"dataflow": ["ws", "os"], "pe_rows": [8, 32], "pe_cols": [8, 16],
                        "glb_kib": [0.5, 64]},
    },
    "execution": {"workers": 2, "max_retries": 1},
}


class Nu:
    """The shared study: where it lives and what each step printed."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.db = cwd / "store" / "nu.db"
        self.url = f"sqlite:///{self.db}"
        self.steps: dict[str, subprocess.CompletedProcess] = {}

    def study(self) -> optuna.Study:
        return optuna.load_study(study_name="nu", storage=self.url)

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return codesign(*args, cwd=self.cwd)


@pytest.fixture(scope="module")
def nu(tmp_path_factory: pytest.TempPathFactory) -> Nu:
    s = Nu(tmp_path_factory.mktemp("nu"))
    (s.cwd / "store").mkdir()
    (s.cwd / "exp.yaml").write_text(yaml.safe_dump(NU))
    s.steps["run"] = s.run("run", "exp.yaml", "--storage", s.url, "--n-trials", "6",
                           "--no-progress")
    s.steps["inspect_after_run"] = s.run("inspect", "nu", "--storage", s.url, "--json")
    s.steps["resume"] = s.run("resume", "nu", "--storage", s.url, "--no-progress")
    return s


slow = pytest.mark.slow


def _quickstart_study(tmp_path: Path) -> tuple[Any, optuna.Study]:
    """The quickstart experiment and an empty study of its objectives in a SQLite file."""
    cfg = load(ROOT / "experiments" / "quickstart.yaml")
    study = optuna.create_study(study_name="quickstart", storage=f"sqlite:///{tmp_path}/q.db",
                                directions=cfg.directions)
    return cfg, study


# ------------------------------------------------------------------ 1. export never deletes


@slow
def test_export_keeps_foreign_files_and_refuses_the_working_folder(nu: Nu) -> None:
    assert nu.steps["resume"].returncode == 0, nu.steps["resume"].stderr[-3000:]
    cwd, url = nu.cwd, nu.url
    foreign = cwd / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("my notes")
    for extra in ([], ["--overwrite"]):  # not a codesign export: refused either way
        proc = nu.run("export", "nu", "--storage", url, "--out", "mine", "--no-test-accuracy",
                      *extra)
        assert proc.returncode == 2 and "holds no codesign export" in proc.stderr
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    assert (foreign / "notes.txt").read_text() == "my notes"

    first = nu.run("export", "nu", "--storage", url, "--out", "ex", "--no-test-accuracy")
    assert first.returncode == 0, first.stderr
    (cwd / "ex" / "README-mine.txt").write_text("kept")
    folder = next(p for p in (cwd / "ex").iterdir() if p.name.startswith("trial_"))
    (folder / "my-sim-output.log").write_text("kept too")
    again = nu.run("export", "nu", "--storage", url, "--out", "ex", "--no-test-accuracy")
    assert again.returncode == 2 and "--overwrite" in again.stderr
    over = nu.run("export", "nu", "--storage", url, "--out", "ex", "--no-test-accuracy",
                  "--overwrite")
    assert over.returncode == 0, over.stderr
    assert "kept 2 file(s) codesign did not write" in over.stderr
    assert (cwd / "ex" / "README-mine.txt").read_text() == "kept"
    assert (folder / "my-sim-output.log").read_text() == "kept too"
    assert (folder / "metrics.yaml").is_file()

    (cwd / "afile").write_text("x")
    for out, words in ((".", "is the working folder"), ("..", "a parent of the working"),
                       (str(ROOT), "source tree"), ("afile", "not a folder")):
        before = sorted(p.name for p in cwd.iterdir())
        proc = nu.run("export", "nu", "--storage", url, "--out", out, "--overwrite",
                      "--no-test-accuracy")
        assert proc.returncode == 2 and words in proc.stderr, proc.stderr
        assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
        assert sorted(p.name for p in cwd.iterdir()) == before
    assert (cwd / "afile").read_text() == "x"


@slow
def test_plot_never_overwrites_a_foreign_file(nu: Nu) -> None:
    (nu.cwd / "photo.png").write_bytes(b"\x89PNG not ours")
    proc = nu.run("plot", "nu", "--storage", nu.url, "--out", "photo.png")
    assert proc.returncode == 2 and "was not written by codesign" in proc.stderr
    assert (nu.cwd / "photo.png").read_bytes() == b"\x89PNG not ours"
    assert nu.run("plot", "nu", "--storage", nu.url, "--out", "store").returncode == 2
    for _ in range(2):  # a figure codesign wrote may be written again
        proc = nu.run("plot", "nu", "--storage", nu.url, "--out", "front.png")
        assert proc.returncode == 0, proc.stderr


def _export_tree(root: Path, files: dict[str, str], study: str = "s") -> None:
    from codesign.files import check_folder, publish_folder

    tmp = root.parent / f".{root.name}.new"
    for rel, text in files.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text(text)
    publish_folder(tmp, root, check_folder(root, "--out", overwrite=True), {"study": study})


def test_publish_replaces_only_the_files_its_manifest_lists(tmp_path: Path) -> None:
    from codesign.files import MANIFEST

    out = tmp_path / "ex"
    _export_tree(out, {"index.yaml": "1", "trial_0001/m.yaml": "1", "trial_0002/m.yaml": "1"})
    (out / "trial_0001" / "mine.txt").write_text("mine")
    _export_tree(out, {"index.yaml": "2", "trial_0003/m.yaml": "2"})
    assert (out / "index.yaml").read_text() == "2"
    assert not (out / "trial_0002").exists()  # ours, gone with the earlier export
    assert (out / "trial_0001" / "mine.txt").read_text() == "mine"  # not ours: kept
    assert not (out / "trial_0001" / "m.yaml").exists()
    doc = json.loads((out / MANIFEST).read_text())
    assert list(doc["files"]) == ["index.yaml", "trial_0003/m.yaml"]
    # a new file that would land on a foreign one: refused, nothing changed
    (out / "trial_0004").write_text("a file of mine named like a folder")
    with pytest.raises(Exception, match="codesign did not write"):
        _export_tree(out, {"trial_0004/m.yaml": "3"})
    assert (out / "index.yaml").read_text() == "2"


def test_publish_follows_no_link_and_no_stale_or_edited_file(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    from codesign import files
    from codesign.errors import OutputError

    mine = tmp_path / "mydata"
    mine.mkdir()
    (mine / "weights.pt").write_text("precious")
    out = tmp_path / "ex"
    _export_tree(out, {"index.yaml": "1", "trial_0000/weights.pt": "w0"})
    shutil.rmtree(out / "trial_0000")
    (out / "trial_0000").symlink_to(mine)  # the user's folder, linked where ours was
    _export_tree(out, {"index.yaml": "2", "trial_0001/weights.pt": "w1"})
    assert (mine / "weights.pt").read_text() == "precious" and (out / "trial_0000").is_symlink()

    (out / "index.yaml").write_text("edited by hand")  # ours once, changed since: not ours
    with pytest.raises(OutputError, match="index.yaml, which codesign did not write"):
        _export_tree(out, {"index.yaml": "3"})
    assert (out / "index.yaml").read_text() == "edited by hand"
    (out / "index.yaml").write_text("2")

    before = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*")
              if p.is_file() and not p.is_symlink()}
    real_move, calls = files._move, []

    def failing_move(src: Path, dst: Path) -> None:  # Ctrl-C half-way through the moves
        calls.append(src)
        if len(calls) == 4:
            raise KeyboardInterrupt
        real_move(src, dst)

    monkeypatch.setattr(files, "_move", failing_move)
    with pytest.raises(KeyboardInterrupt):
        _export_tree(out, {"index.yaml": "3", "trial_0002/weights.pt": "w2"})
    monkeypatch.setattr(files, "_move", real_move)
    after = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*")
             if p.is_file() and not p.is_symlink()}
    assert after == before  # the earlier export, as it was
    assert not list(tmp_path.glob(".ex.old-*"))

    checked = files.check_folder(out, "--out", overwrite=True)
    shutil.rmtree(out)  # the folder changes after the check: the user's files now
    (out / "trial_0001").mkdir(parents=True)
    (out / "trial_0001" / "weights.pt").write_text("the user's")
    tmp = tmp_path / ".ex.new"
    (tmp / "trial_0001").mkdir(parents=True)
    (tmp / "trial_0001" / "weights.pt").write_text("w")
    with pytest.raises(OutputError, match="changed while the export was written"):
        files.publish_folder(tmp, out, checked, {"study": "s"})
    assert (out / "trial_0001" / "weights.pt").read_text() == "the user's"


def test_a_crafted_manifest_cannot_delete_outside_the_folder(tmp_path: Path) -> None:
    from codesign.files import MANIFEST, check_folder

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "ex"
    out.mkdir()
    (out / "x").write_text("x")
    (out / MANIFEST).write_text(json.dumps({"codesign_export": 1,
                                            "files": {"../victim.txt": "0" * 64}}))
    with pytest.raises(Exception, match="holds no codesign export"):
        check_folder(out, "--out", overwrite=True)
    assert victim.read_text() == "keep me"


# ------------------------------------------------------------------ 2. repeated designs


@slow
def test_repeats_are_recorded_and_listed_once(nu: Nu) -> None:
    from codesign.report import repeats

    study = nu.study()
    done = study.get_trials(states=(TrialState.COMPLETE,))
    firsts = [t for t in done if "codesign.repeat_of" not in t.user_attrs]
    again = [t for t in done if "codesign.repeat_of" in t.user_attrs]
    keys = [t.user_attrs["codesign.design_key"] for t in firsts]
    assert len(keys) == len(set(keys)) == 12  # n_trials counts distinct designs
    assert again, "the seed was chosen so that the random sampler repeats itself"
    by_number = {t.number: t for t in study.trials}
    for t in again:
        first = by_number[t.user_attrs["codesign.repeat_of"]]
        assert t.values == first.values and t.constraints == first.constraints
        assert not t.user_attrs["codesign.trained"] and not t.user_attrs["codesign.cached"]
        assert t.user_attrs["codesign.layers"] == first.user_attrs["codesign.layers"]
    front = pareto_trials(study)
    assert len({t.user_attrs["codesign.design_key"] for t in front}) == len(front)
    shared = repeats(study)
    table = nu.steps["resume"].stdout.split("-----", 1)[1].splitlines()[1:]
    listed = [int(line.split()[0]) for line in table if line.strip()]
    assert listed and sorted(listed) == sorted(t.number for t in front)
    ex = nu.run("export", "nu", "--storage", nu.url, "--out", "ex2", "--no-test-accuracy",
                "--format", "json")
    assert ex.returncode == 0, ex.stderr
    index = json.loads((nu.cwd / "ex2" / "index.json").read_text())
    assert [r["trial"] for r in index["designs"]] == [t.number for t in front]
    for row in index["designs"]:
        assert row["repeat_trials"] == shared.get(row["trial"], [])


def test_a_resumed_sampler_does_not_replay_its_first_draws(tmp_path: Path) -> None:
    from codesign.samplers import session_seed

    cfg, study = _quickstart_study(tmp_path)
    dists = cfg.space.distributions()
    study.sampler = make(cfg.sampler, seed=session_seed(cfg.study.seed, 0))
    first = []
    for _ in range(5):
        t = study.ask(dists)
        first.append(t.params)
        study.tell(t, [0.5, 1.0, 1.0])
    resumed = optuna.load_study(study_name="quickstart", storage=f"sqlite:///{tmp_path}/q.db")
    resumed.sampler = make(cfg.sampler, seed=session_seed(cfg.study.seed, len(resumed.trials)))
    later = [resumed.ask(dists).params for _ in range(5)]
    assert session_seed(0, 0) == 0 and session_seed(0, 5) != 0
    assert later != first and not any(p in first for p in later)


def test_older_studies_list_duplicate_designs_once(tmp_path: Path) -> None:
    """Trials of a version without repeat marks: the same design twice is one Pareto row."""
    from codesign.report import repeats

    cfg, study = _quickstart_study(tmp_path)
    params = cfg.space.example_params()
    design = cfg.space.decode(params).to_dict()
    for _ in range(2):
        study.enqueue_trial(params)
        t = study.ask(cfg.space.distributions())
        t.set_user_attr("codesign.design", design)  # no design_key: computed from the design
        study.tell(t, [0.9, 1.0, 1.0])
    assert [t.number for t in pareto_trials(study)] == [0]
    assert repeats(study) == {0: [1]}


# ------------------------------------------------------------------ 3. hints that work


def test_hints_name_the_storage_and_never_a_password() -> None:
    from codesign.study import command_hint, suggest

    assert command_hint("resume", "q", "sqlite:///runs/q.db") == "codesign resume q"
    assert command_hint("resume", "q", "sqlite:////data/q.db") == (
        "codesign resume q --storage sqlite:////data/q.db")
    assert command_hint("inspect", "q", "sqlite:////runs/q.db").endswith("sqlite:////runs/q.db")
    url = "postgresql+psycopg://me:s3cret@127.0.0.1:5432/db?password=s3cret&sslmode=require"
    hint = suggest("resume", "q", url)
    assert "s3cret" not in hint and "PGPASSWORD" in hint.split("`")[2]  # after the command
    command = hint.split("`")[1]
    assert command.endswith("--storage 'postgresql+psycopg://me@127.0.0.1:5432/db?sslmode=require'")
    build_parser().parse_args(shlex.split(command)[1:])  # a command the CLI takes


@slow
def test_a_conflict_hint_runs_as_printed(nu: Nu) -> None:
    changed = json.loads(json.dumps(NU))
    changed["space"]["accelerator"]["pe_rows"] = [8, 16]
    (nu.cwd / "changed.yaml").write_text(yaml.safe_dump(changed))
    proc = nu.run("run", "changed.yaml", "--storage", nu.url)
    assert proc.returncode == 2 and "space.accelerator.pe_rows" in proc.stderr
    hint = proc.stderr.split("`")[1]
    assert hint == f"codesign resume nu --storage {nu.url}"
    again = nu.run(*shlex.split(hint)[1:])
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stderr


# ------------------------------------------------------------------ 4. optuna-dashboard


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return json.loads(r.read())


@slow
def test_dashboard_shows_constraints_and_marks_the_feasible_front(nu: Nu) -> None:
    exe = Path(sys.executable).with_name("optuna-dashboard")
    assert exe.exists(), "optuna-dashboard is a test extra: pip install -e '.[test]'"
    port = _free_port()
    server = subprocess.Popen([str(exe), nu.url, "--host", "127.0.0.1", "--port", str(port)],
                              env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:
            try:
                studies = _get(port, "/api/studies")["study_summaries"]
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.3)
        (sid,) = [s["study_id"] for s in studies if s["study_name"] == "nu"]
        detail = _get(port, f"/api/studies/{sid}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    trials = {t["number"]: t for t in detail["trials"]}
    study = nu.study()
    infeasible = [t for t in study.get_trials(states=(TrialState.COMPLETE,))
                  if any(v > 0 for v in t.constraints.values())]
    assert infeasible
    for t in infeasible:
        shown = trials[t.number]["constraints"]
        assert shown and max(shown) > 0 and shown == list(t.constraints.values())
    front = {t.number for t in pareto_trials(study)}
    assert front and study.user_attrs["codesign.pareto_trials"] == sorted(front)
    for number, t in trials.items():
        marked = "Feasible Pareto design" in t["note"]["body"]
        assert marked == (number in front)
    note = detail["note"]["body"]
    assert all(f"| {n} |" in note for n in front) and "ignores constraints" in note


# ------------------------------------------------------------------ 5. commands in the docs


def _doc_commands() -> list[tuple[str, str, bool]]:
    """``(where, command, full)`` for every ``codesign ...`` in the README, the docs, the
    example experiments' comments and the CLI's own examples; ``full``: a whole command
    line (in a code block or a comment) rather than a usage synopsis in running text."""
    from codesign.cli import EPILOG

    found: list[tuple[str, str, bool]] = []

    def add(where: str, line: str, full: bool) -> None:
        for part in line.replace("&&", ";").split(";"):
            part = part.split(" #", 1)[0].split(" > ", 1)[0].split(" | ", 1)[0].strip()
            part = part.removeprefix("$ ").strip()
            if part.startswith("codesign "):  # a synopsis ([optional], a|b) is not a command
                found.append((where, part, full and not any(c in part for c in "[]|")))

    docs = [ROOT / "README.md", ROOT / "experiments" / "README.md",
            *sorted((ROOT / "docs").rglob("*.md"))]
    for path in docs:
        text = path.read_text()
        where = str(path.relative_to(ROOT))
        for block in text.split("```")[1::2]:
            lines = block.replace("\\\n", " ").splitlines()
            for line in lines[1:] if lines and not lines[0].startswith("codesign") else lines:
                add(where, line, True)
        for span in text.split("`")[1::2]:  # in running text: names, flags and synopses
            if span.startswith("codesign ") and "\n" not in span:
                add(where, span, False)
    for path in sorted((ROOT / "experiments").glob("*.yaml")):
        for line in path.read_text().splitlines():
            if line.lstrip().startswith("#"):
                add(str(path.relative_to(ROOT)), line.lstrip("# "), True)
    for line in EPILOG.replace("\\\n", " ").splitlines():
        add("codesign --help", line.strip(), True)
    return found


def test_every_command_in_the_docs_exists_with_its_flags() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    commands = _doc_commands()
    assert len(commands) > 20
    problems = []
    for where, command, full in commands:
        words = shlex.split(command.replace("NAME|EXP.yaml", "NAME"))
        sub = words[1]
        if sub not in subparsers:
            problems.append(f"{where}: `{command}`: no subcommand {sub!r}")
            continue
        known = {o for a in subparsers[sub]._actions for o in a.option_strings}
        for w in words[2:]:
            flag = w.split("=", 1)[0].strip("[]")
            if flag.startswith("--") and flag not in known:
                problems.append(f"{where}: `{command}`: {sub} has no {flag}")
        if full:
            try:
                parser.parse_args(words[1:])
            except SystemExit:
                problems.append(f"{where}: `{command}`: the CLI refuses it")
            for w in words[2:]:
                if w.startswith("experiments/") and not (ROOT / w).exists():
                    problems.append(f"{where}: `{command}`: no file {w}")
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------ 6. evaluate --params


def test_params_skeleton_feeds_evaluate_inline_and_from_stdin(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    exp = yaml.safe_load((ROOT / "experiments" / "quickstart.yaml").read_text())
    exp["task"]["epochs"] = 1
    path = tmp_path / "q.yaml"
    path.write_text(yaml.safe_dump(exp))
    assert main(["params", str(path), "--json"]) == 0
    example = json.loads(capsys.readouterr().out)
    cfg = load(path)
    assert set(example) == set(cfg.space.distributions())
    cfg.space.check_params(example)
    assert main(["params", str(path)]) == 0
    text = capsys.readouterr().out
    assert "hw/pe_rows" in text and "[4, 8, 16, 32]" in text
    assert main(["evaluate", str(path), "--params", json.dumps(example), "--json"]) == 0
    inline = json.loads(capsys.readouterr().out)
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(example)))
    assert main(["evaluate", str(path), "--params", "-", "--json"]) == 0
    piped = json.loads(capsys.readouterr().out)
    assert inline["design"] == piped["design"] and inline["accuracy"] == piped["accuracy"]
    assert main(["evaluate", str(path), "--params", '{"hw/pe_rows": 5}']) == 2
    assert "--params: hw/pe_rows: 5 is not in" in capsys.readouterr().err


# ------------------------------------------------------------------ 7. what summaries say


@slow
def test_summaries_say_what_happened(nu: Nu) -> None:
    run = nu.steps["run"]
    assert run.returncode == 0, run.stderr[-3000:]
    assert "6 finished designs" in run.stdout
    assert "over budget (priced, never trained)" in run.stdout
    assert json.loads(nu.steps["inspect_after_run"].stdout)["n_trials_target"] == 6
    text = nu.run("inspect", "nu", "--storage", nu.url)
    assert text.returncode == 0
    assert "failures (" in text.stdout and "pruned: unmappable:" in text.stdout
    assert "target 12" in text.stdout and "repeated proposals" in text.stdout
    done = nu.run("resume", "nu", "--storage", nu.url)
    assert done.returncode == 0 and "nothing to do" in done.stdout
    assert f"codesign resume nu --storage {nu.url} --n-trials 32" in done.stdout


@slow
def test_resume_from_a_yaml_that_differs_names_the_change(nu: Nu) -> None:
    changed = json.loads(json.dumps(NU))
    changed["task"]["epochs"] = 3
    (nu.cwd / "epochs.yaml").write_text(yaml.safe_dump(changed))
    before = len(nu.study().trials)
    proc = nu.run("resume", "epochs.yaml", "--storage", nu.url)
    assert proc.returncode == 2 and "task.epochs" in proc.stderr
    assert len(nu.study().trials) == before


def test_a_misspelled_sampler_option_lists_that_samplers_options() -> None:
    with pytest.raises(ConfigError) as err:
        from_mapping({"schema_version": 1, "study": {"name": "s"},
                      "sampler": {"name": "nsga2", "populaton_size": 8}}, check_data=False)
    (line,) = err.value.lines()
    assert "sampler.populaton_size" in line and "population_size" in line
    assert "crossover_prob" in line


# ------------------------------------------------------------------ 8. paths


def test_input_paths_are_found_from_the_yaml_folder(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    sub = tmp_path / "project" / "exps"
    sub.mkdir(parents=True)
    shutil.copy(ROOT / "experiments" / "accelerators" / "edge_systolic.yaml", sub / "acc.yaml")
    (sub / "data").mkdir()
    exp = {"schema_version": 1, "study": {"name": "p"},
           "task": {"dataset": "mnist", "data_dir": "data"},
           "space": {"accelerator": {"file": "acc.yaml", "pe_rows": [8, 16]}}}
    (sub / "exp.yaml").write_text(yaml.safe_dump(exp))
    monkeypatch.chdir(tmp_path)  # somewhere else
    cfg = load("project/exps/exp.yaml", check_data=False)
    assert cfg.task.data_dir == str(sub / "data")
    assert cfg.resolved["task"]["data_dir"] == str(sub / "data")
    assert cfg.space.dims["hw/glb_kib"].value == 64.0  # from acc.yaml
    assert cfg.study.artifacts_dir is None  # beside the storage, chosen at creation


@slow
def test_weights_go_beside_the_storage(nu: Nu) -> None:
    study = nu.study()
    beside = nu.db.parent / "nu-artifacts"
    assert study.user_attrs["codesign.artifacts_dir"] == str(beside)
    trained = [t for t in study.trials if t.user_attrs.get("codesign.trained")]
    assert trained and all(Path(t.user_attrs["codesign.weights"]).parent == beside / "weights"
                           for t in trained)
    assert f"weights: {beside}\n" in nu.steps["run"].stdout
    assert not (nu.cwd / "runs").exists()


# ------------------------------------------------------------------ 9. readers with limits


def _idx(dims: tuple[int, ...], data: bytes = b"") -> bytes:
    return bytes([0, 0, 0x08, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + data


def test_an_idx_header_that_overflows_is_one_clear_error(tmp_path: Path) -> None:
    from evaluators.training.datasets import read_idx

    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(_idx((0xFFFFFFFF,) * 4, b"\0" * 64))  # 2**128 elements: overflows int64
    with pytest.raises(InputError, match="over the .* byte limit") as err:
        read_idx(str(path))
    assert err.value.key == "train-images-idx3-ubyte"


def test_a_gzip_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    from evaluators.training.datasets import read_idx

    zeros = b"\0" * (64 << 20)  # 64 MiB of zeros: 64 KiB compressed
    bomb = tmp_path / "bomb-idx1-ubyte.gz"
    bomb.write_bytes(gzip.compress(_idx((len(zeros),), zeros)))
    tail = tmp_path / "tail-idx1-ubyte.gz"  # a small header, then the bomb as "trailing" bytes
    tail.write_bytes(gzip.compress(_idx((16,), zeros)))
    assert bomb.stat().st_size < 1 << 20
    tracemalloc.start()
    with pytest.raises(InputError, match="over the 1048576 byte limit"):
        read_idx(str(bomb), max_bytes=1 << 20)
    with pytest.raises(InputError, match="unexpected bytes after the data"):
        read_idx(str(tail))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20  # never the 64 MiB


def test_a_pickle_that_allocates_by_size_is_refused(tmp_path: Path) -> None:
    from evaluators.training.datasets import read_cifar_batch

    class Bomb:
        def __reduce__(self) -> tuple:
            return (bytes, (10**12,))

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": Bomb(), "labels": [0]}, protocol=2))
    with pytest.raises(InputError, match=r"refusing bytes\(1000000000000\)"):
        read_cifar_batch(str(path), label_key="labels", num_classes=10)
    big = tmp_path / "data_batch_2"
    big.write_bytes(b"\0" * 2048)
    with pytest.raises(InputError, match="over the 1024 byte limit"):
        read_cifar_batch(str(big), label_key="labels", num_classes=10, max_bytes=1024)


def test_an_unreadable_dataset_stops_the_run_before_anything(tmp_path: Path) -> None:
    data = tmp_path / "fmnist"
    data.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (data / name).write_bytes(_idx((0xFFFFFFFF,) * 3))
    exp = json.loads(json.dumps(NU))
    exp["task"] = {"dataset": "fashion_mnist", "data_dir": "fmnist", "epochs": 1}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(exp))
    proc = codesign("run", "exp.yaml", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    line, = proc.stderr.splitlines()
    assert line.startswith(f"error: {data}: train-images-idx3-ubyte: header declares")
    assert not (tmp_path / "runs").exists()


def test_check_dataset_readable_reads_the_files() -> None:
    from evaluators.specs import TaskSpec
    from evaluators.training import check_dataset_readable

    check_dataset_readable(TaskSpec(dataset="digits"))
    with pytest.raises(DatasetError, match="missing files"):
        check_dataset_readable(TaskSpec(dataset="mnist", data_dir=str(ROOT)))


# ------------------------------------------------------------------ 10. secrets, foreign files


def test_passwords_are_masked_wherever_a_url_is_shown(tmp_path: Path) -> None:
    from codesign.urls import display_url

    secret = "postgresql+psycopg2://me:s3cret@127.0.0.1:1/db?password=s3cret"
    assert "s3cret" not in display_url(secret)
    for url in ("postgresql://u:s3/cr?e#t@h/db", "postgresql://u:s3@cret@h:5432/db",
                "postgresql://u@h/db?sslpassword=s3cret&sslmode=require",
                "mysql+pymysql://u@h/db?passwd=s3cret"):
        shown = display_url(url)
        assert "s3" not in shown and "cret" not in shown and "***" in shown, shown
    cfg = from_mapping({"schema_version": 1, "study": {"name": "s", "storage": secret}},
                       check_data=False)
    assert "s3cret" not in json.dumps(cfg.resolved) and cfg.study.storage == secret
    with pytest.raises(Exception) as err:
        open_storage(secret)
    assert "s3cret" not in str(err.value)


@slow
def test_export_masks_the_password_and_copies_only_its_own_weights(nu: Nu) -> None:
    from codesign.export import export_study
    from codesign.study import artifacts_dir, load_existing

    crafted = nu.cwd / "crafted.db"
    shutil.copy(nu.db, crafted)
    outside = nu.cwd / "system-file.txt"
    outside.write_text("not a weights file")
    study = optuna.load_study(study_name="nu", storage=f"sqlite:///{crafted}")
    target = pareto_trials(study)[0]
    with sqlite3.connect(crafted) as db:  # a crafted study: its weights attribute points out
        db.execute("UPDATE trial_user_attributes SET value_json = ? WHERE key = ? AND "
                   "trial_id = (SELECT trial_id FROM trials WHERE number = ?)",
                   (json.dumps(str(outside)), "codesign.weights", target.number))
    url = f"sqlite:///{crafted}"
    study, cfg = load_existing("nu", open_storage(url), url)
    out = nu.cwd / "masked"
    done = export_study(study, cfg, out, artifacts=artifacts_dir(study, cfg, url),
                        storage_url="postgresql://me:s3cret@db.example/nu", test_accuracy=False)
    folder = out / f"trial_{target.number:04d}"
    assert not (folder / "weights.pt").exists()
    note = yaml.safe_load((folder / "metrics.yaml").read_text())["test_accuracy_note"]
    assert "not the study's own weights file" in note and str(outside) in note
    others = [r["folder"] for r in done.rows if r["trial"] != target.number]
    assert all((out / f / "weights.pt").is_file() for f in others)
    for path in out.rglob("*"):
        if path.is_file():
            assert b"s3cret" not in path.read_bytes(), path


# ------------------------------------------------------------------ 11. minimal files


LAYERS = [  # (name, H, W, R, S, C, K, stride, padding): ResNet-50 and VGG-16 at 224 x 224
    ("r50_conv1", 224, 224, 7, 7, 3, 64, 2, 3),
    ("r50_res5_3x3", 7, 7, 3, 3, 512, 512, 1, 1),
    ("r50_res5_1x1", 7, 7, 1, 1, 512, 2048, 1, 0),
    ("vgg_conv1_1", 224, 224, 3, 3, 3, 64, 1, 1),
    ("vgg_conv4_3", 28, 28, 3, 3, 512, 512, 1, 1),
    ("vgg_fc6", 1, 1, 1, 1, 25088, 4096, 1, 0),
]


@pytest.mark.parametrize("dataflow", ["ws", "os", "is"])
@pytest.mark.parametrize("side", [8, 32, 128, 256])
def test_a_minimal_file_prices_what_scalesim_defaults_price(tmp_path: Path, dataflow: str,
                                                           side: int) -> None:
    from evaluators.hardware import load_accelerator_yaml, make_model
    from evaluators.specs import ConvLayer

    path = tmp_path / "min.yaml"
    path.write_text(yaml.safe_dump({"template": "systolic", "dataflow": dataflow,
                                    "pe_rows": side, "pe_cols": side}))
    acc = load_accelerator_yaml(str(path))
    model = make_model(acc)
    for name, h, w, r, s, c, k, stride, pad in LAYERS:  # InfeasibleDesign if no tile fits
        cost = model.evaluate_layer(ConvLayer(name, h, w, r, s, c, k, stride, padding=pad))
        assert cost.total_cycles > 0
    assert acc.glb_kib == max(192.0, 192.0 * side * side / 1024)  # SCALE-Sim's scale.cfg


def test_a_space_around_a_minimal_file_sizes_each_designs_buffer(tmp_path: Path) -> None:
    from search_spaces import build

    (tmp_path / "min.yaml").write_text(yaml.safe_dump({"template": "systolic",
                                                       "pe_rows": 32, "pe_cols": 32}))
    space = build({"accelerator": {"file": "min.yaml", "pe_rows": [32, 128],
                                   "pe_cols": [32, 128]}},
                  in_channels=1, input_hw=8, num_classes=10, base_dir=str(tmp_path))
    big = space.decode({**space.example_params(), "hw/pe_rows": 128, "hw/pe_cols": 128})
    assert big.accelerator.glb_kib == 3072.0
    assert space.decode(space.example_params()).accelerator.glb_kib == 192.0


# ------------------------------------------------------------------ 12. readability


@slow
def test_layer_costs_explain_total_below_compute(nu: Nu) -> None:
    out = nu.cwd / "ex_costs"
    proc = nu.run("export", "nu", "--storage", nu.url, "--out", "ex_costs",
                  "--no-test-accuracy")
    assert proc.returncode == 0, proc.stderr
    rows = [r for f in out.glob("trial_*/layer_costs.csv") for r in csv.DictReader(open(f))]
    assert rows
    for r in rows:
        total, compute = int(r["total_cycles"]), int(r["compute_cycles"])
        overlapped = int(r["compute_cycles_overlapped"])
        assert overlapped == compute - int(r["preload_cycles_hidden"])
        assert total == max(overlapped, -(-float(r["dram_cycles"]) // 1),
                            -(-float(r["glb_cycles"]) // 1))
    assert any(int(r["total_cycles"]) < int(r["compute_cycles"]) for r in rows)


@slow
def test_no_ray_token_warning_on_a_local_run(nu: Nu) -> None:
    for step in ("run", "resume"):
        assert "Token authentication" not in nu.steps[step].stderr


def test_plot_panels_and_log_colours(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.colors import LogNorm

    from codesign.plots import _figure

    cfg, study = _quickstart_study(tmp_path)
    rng = np.random.default_rng(0)
    for i in range(30):
        t = study.ask(cfg.space.distributions())
        t.set_user_attr("codesign.design_key", str(i))
        study.tell(t, [float(rng.uniform(0.5, 1)), float(10 ** rng.uniform(-3, 0)),
                       float(10 ** rng.uniform(-4, 2))])
    fig = _figure(study, cfg, as_figure=True)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>" and ax.get_visible()]
    assert len(panels) == 4  # three pairs of three objectives + the hypervolume history
    norms = {ax.get_title(): c.norm for ax in panels for c in ax.collections
             if getattr(c, "colorbar", None) is not None}
    assert isinstance(norms["accuracy vs latency_ms"], LogNorm)  # coloured by energy
    assert not isinstance(norms["energy_mj vs latency_ms"], LogNorm)  # by accuracy
    assert "Pareto-optimal over all 3 objectives" in fig._suptitle.get_text()


# ------------------------------------------------------------------ 13. README and a fast subset


def test_the_fast_subset_leaves_out_every_slow_test() -> None:
    readme = (ROOT / "README.md").read_text()
    assert 'pytest -m "not slow"' in readme
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m",
                           "not slow", "tests/test_e2e.py", "tests/test_new_user.py"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    selected = [line for line in proc.stdout.splitlines() if "::" in line]
    assert selected and not any("test_e2e.py" in line for line in selected)
    # every test of this module that uses the shared study (real Ray) is marked slow
    users = [name for name, f in globals().items() if name.startswith("test_")
             and "nu" in inspect.signature(f).parameters]
    assert users and not any(f"::{name}" in line for name in users for line in selected)
