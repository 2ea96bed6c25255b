"""``codesign report``: the interactive HTML report and its Markdown twin, through the CLI.

The study is real (SQLite, the quickstart experiment stored as `run` stores it) and its
trials carry what the driver records: hardware priced by the real model, constraints where
the driver puts them, design attributes; only the accuracy is made up (no training, no Ray).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from plotly.offline import get_plotlyjs

from codesign.cli import main
from codesign.config import load
from codesign.files import HTML_HEAD
from codesign.html_report import MD_HEAD
from codesign.optuna_adapter import add_complete
from codesign.report import fmt_value, pareto_trials
from codesign.study import create_or_load, open_storage
from evaluators.evaluate import constraint_values, price

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "experiments" / "quickstart.yaml"
SECTIONS = ["summary", "fronts", "front3d", "hypervolume", "parcoords", "importance", "pareto"]
FIGURES = ["fig-fronts", "fig-front3d", "fig-hv", "fig-parcoords", "fig-importance"]


def _study(tmp_path: Path, n: int) -> tuple[str, optuna.Study]:
    """A quickstart study with ``n`` evaluated designs, a repeat of the most accurate
    feasible one (on the front, then) and a failure
    (trials recorded as the driver records a nested strategy's pairs: one write each)."""
    cfg = load(QUICKSTART)
    url = f"sqlite:///{tmp_path}/q.db"
    study, _ = create_or_load(cfg, open_storage(url), url, sampler=None)
    proposer = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    rng = np.random.default_rng(0)
    dists = cfg.space.distributions()
    best: dict = {"accuracy": 0.0}
    for i in range(n + 1):
        params = best["params"] if i == n and "trial" in best else proposer.ask(dists).params
        design = cfg.space.decode(params)
        hw = price(design, cfg.task.deploy_input)
        named = constraint_values(hw, cfg.budgets)
        ok = all(v <= 0 for v in named.values())
        accuracy = best["accuracy"] if i == n else float(rng.uniform(0.5, 1.0)) if ok else 0.1
        attrs = {"design": design.to_dict(), "design_key": design.design_key(),
                 "hw": hw.to_dict()["total"], "feasible": ok, "accuracy": accuracy,
                 "constraint_names": list(named), "trained": ok and i < n, "cached": False,
                 "train_seconds": 30.0 if ok and i < n else None}
        if i == n and "trial" in best:
            attrs["repeat_of"] = best["trial"]
        add_complete(study, params=params, distributions={k: dists[k] for k in params},
                     values=[accuracy, hw.latency_ms, hw.energy_mj],
                     constraints=list(named.values()),
                     user_attrs={"codesign." + k: v for k, v in attrs.items()})
        if ok and i < n and accuracy > best["accuracy"]:
            best = {"params": params, "accuracy": accuracy, "trial": i}
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL,
                                              user_attrs={"codesign.fail_reason": "diverged"}))
    return url, study


def _report(url: str, out: Path, *more: str) -> int:
    return main(["report", "quickstart", "--storage", url, "--out", str(out), *more])


def test_report_has_every_section_and_the_pareto_rows(tmp_path: Path, capsys) -> None:
    url, study = _study(tmp_path, 14)
    out = tmp_path / "r.html"
    assert _report(url, out) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    text = out.read_text()
    assert text.startswith(HTML_HEAD)
    for anchor in SECTIONS:
        assert f"id='{anchor}'" in text
    for div in FIGURES:
        assert f'id="{div}"' in text
    assert text.count("Plotly.newPlot") == len(FIGURES)
    bundle = get_plotlyjs()
    assert bundle in text  # plotly.js embedded: the file opens offline
    assert "<script src=" not in text.replace(bundle, "")
    assert "parcoords" in text and "scatter3d" in text and "too few" not in text
    md = (tmp_path / "r.md").read_text()
    assert md.startswith(MD_HEAD) and "[r.html](r.html)" in md
    assert "| storage | sqlite:///" in md and "1 complete" not in md
    assert "| trials by state | 15 complete, 1 fail |" in md
    front = pareto_trials(study)
    table = md.split(f"## Pareto set ({len(front)} distinct designs)")[1].splitlines()
    assert front and len([line for line in table if line.startswith("| ")]) == len(front) + 1
    for t in front:
        line = next(line for line in table if line.startswith(f"| {t.number} | "))
        assert f"| {fmt_value(t.user_attrs['codesign.accuracy'])} |" in line
    again = study.trials[14].user_attrs["codesign.repeat_of"]
    assert f"| {again} | 14 |" in "\n".join(table)  # its design was proposed again by 14
    assert "## Parameter importances" in md and "| parameter | accuracy |" in md


def test_few_designs_say_so_instead_of_failing(tmp_path: Path) -> None:
    url, _ = _study(tmp_path, 2)
    out = tmp_path / "few.html"
    assert _report(url, out, "--markdown", str(tmp_path / "notes.md")) == 0
    md = (tmp_path / "notes.md").read_text()
    assert "too few feasible finished designs" in md and "Pareto set (" in md
    assert "too few feasible finished designs" in out.read_text()
    assert not (tmp_path / "few.md").exists()


def test_a_foreign_file_is_kept_and_an_earlier_report_replaced(tmp_path: Path,
                                                                capsys) -> None:
    url, _ = _study(tmp_path, 3)
    out, md = tmp_path / "r.html", tmp_path / "r.md"
    out.write_text("<html>my own notes</html>")
    assert _report(url, out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --out: ") and "not written by" in err[0]
    assert out.read_text() == "<html>my own notes</html>" and not md.exists()
    out.unlink()
    md.write_text("# my notes\n")
    assert _report(url, out) == 2
    assert "error: --markdown: " in capsys.readouterr().err
    assert md.read_text() == "# my notes\n" and not out.exists()
    md.unlink()
    assert _report(url, out) == 0
    for f in (out, md):  # a later report replaces codesign's own files
        f.write_text(f.read_text() + "EARLIER")
    assert _report(url, out) == 0
    assert "EARLIER" not in out.read_text() and "EARLIER" not in md.read_text()


@pytest.mark.parametrize("args", [["--out", "r.png"], ["--out", "r.html", "--markdown",
                                                       "r.txt"]])
def test_bad_file_names_exit_2(tmp_path: Path, args: list[str], capsys) -> None:
    url, _ = _study(tmp_path, 1)
    args = [a if a.startswith("--") else str(tmp_path / a) for a in args]
    assert main(["report", "quickstart", "--storage", url, *args]) == 2
    assert capsys.readouterr().err.startswith("error: --")
    assert list(tmp_path.iterdir()) == [tmp_path / "q.db"]


def test_an_unknown_study_exits_2(tmp_path: Path, capsys) -> None:
    url, _ = _study(tmp_path, 1)
    assert main(["report", "nope", "--storage", url, "--out", str(tmp_path / "r.html")]) == 2
    assert "nope" in capsys.readouterr().err and not (tmp_path / "r.html").exists()
