"""Experiment YAML: good files build, every kind of bad input gives one-line errors, exit 2.

Most cases call the CLI's ``main`` in-process (fast); one case runs the installed
``codesign`` script to prove there is no traceback on the real command line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from codesign.cli import main
from codesign.config import ConfigError, load

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "experiments" / "quickstart.yaml"


def base() -> dict:
    return yaml.safe_load(QUICKSTART.read_text())


def write(tmp_path: Path, data: dict | str, name: str = "exp.yaml") -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def test_quickstart_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(QUICKSTART)]) == 0
    out = capsys.readouterr().out
    assert "ok:" in out and "quickstart" in out
    cfg = load(QUICKSTART)
    assert cfg.objectives == ("accuracy", "latency_ms", "energy_mj")
    assert cfg.directions == ["maximize", "minimize", "minimize"]
    assert cfg.study.storage == "sqlite:///runs/quickstart.db"
    assert "hw/pe_rows" in cfg.space.distributions()
    assert "hw/template" not in cfg.space.distributions()  # fixed values are not searched


def test_minimal_experiment_gets_defaults(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, {"schema_version": 1, "study": {"name": "m"}}))
    assert cfg.task.dataset == "digits" and cfg.sampler.name == "nsga2"
    # the resolved experiment round-trips through the loader (resume relies on it)
    from codesign.config import from_mapping

    again = from_mapping(cfg.resolved)
    assert again.fingerprint() == cfg.fingerprint()
    assert again.space.distributions().keys() == cfg.space.distributions().keys()


def _mutate(d: dict, path: str, value: object) -> dict:
    keys = path.split(".")
    cur = d
    for k in keys[:-1]:
        cur = cur.setdefault(k, {})
    if value is _DELETE:
        del cur[keys[-1]]
    else:
        cur[keys[-1]] = value
    return d


_DELETE = object()

BAD = [
    # (mutation path, value, expected key in the message, expected words)
    ("study.n_trails", 5, "study.n_trails", "unknown key"),
    ("study.n_trials", "ten", "study.n_trials", "expected int"),
    ("study.n_trials", 0, "study.n_trials", "must be > 0"),
    ("study.name", "../etc/passwd", "study.name", "letters, digits"),
    ("study.name", _DELETE, "study.name", "missing"),
    ("schema_version", 2, "schema_version", "unsupported version"),
    ("objectives", ["accuracy", "speed"], "objectives", "unknown objective"),
    ("constraints.area_mm2", -1, "constraints.area_mm2", "must be > 0"),
    ("constraints.flops", 3, "constraints.flops", "unknown key"),
    ("sampler.name", "cmaes-ish", "sampler.name", "must be one of"),
    ("sampler.population_size", 1, "sampler.population_size", ">= 2"),
    ("task.dataset", "imagenet", "task.dataset", "unknown dataset"),
    ("task.lr", "fast", "task.lr", "expected float"),
    ("task.steps", 100, "task.steps", "either epochs or steps"),
    ("task.device", "tpu", "task.device", "must be one of"),
    ("space.network.width", [8, "wide"], "space.network.width[1]", "expected int"),
    ("space.network.kernel", [2, 3], "space.network.kernel[0]", "must be 1, 3, 5 or 7"),
    ("space.compression.prune_ratio", {"low": 0.5, "high": 0.1}, "space.compression.prune_ratio",
     "low <= high"),
    ("space.compression.weight_bits", [0, 8], "space.compression.weight_bits[0]", "one of"),
    ("space.accelerator.pe_rows", {"low": 4}, "space.accelerator.pe_rows", "needs high"),
    ("space.accelerator.dataflow", ["ws", "rs"], "space.accelerator.dataflow[1]", "one of"),
    ("space.accelerator.glb_kib", -8, "space.accelerator.glb_kib", "must be > 0"),
    ("space.accelerator.pe_array", 4, "space.accelerator.pe_array", "unknown key"),
    ("space.accelerator.rf_bytes", 0, "space.accelerator.rf_bytes", "must be >= 1"),
    ("space.accelerator.dram_gbps", {"low": 0, "high": 4, "log": True},
     "space.accelerator.dram_gbps.low", "must be > 0"),
    ("execution.workers", -1, "execution.workers", "must be >= 0"),
    ("study.seed", 2**40, "study.seed", "2**32"),
    ("space.compression.weight_bits", {"low": 4, "high": 16}, "space.compression.weight_bits",
     "outside the domain"),
    ("space.accelerator.glb_kib", {"low": 1.0, "high": 64.0, "log": True, "step": 1.0},
     "space.accelerator.glb_kib", "log and step"),
    ("space", [], "space", "expected a mapping"),
    ("execution.max_retries", True, "execution.max_retries", "expected int"),
    ("task.dataset", "mnist", "task.data_dir", "data_dir is required"),
    ("task.deploy_input", 0, "task.deploy_input", "must be > 0"),
    ("task.deploy_input", 32.5, "task.deploy_input", "expected int"),
    ("task.warm_start", "nearest", "task.warm_start", "must be one of"),
    ("task.warm_start", "checkpoint", "task.warm_start_checkpoint", "missing"),
    ("task.warm_start_checkpoint", "w.pt", "task.warm_start_checkpoint", "only used with"),
    ("space.compression.rank_ratio", 0, "space.compression.rank_ratio", "(0, 1]"),
    ("space.compression.rank_ratio", [0.5, 1.5], "space.compression.rank_ratio[1]", "(0, 1]"),
    ("space.compression.precision", "layer", "space.compression.precision", "must be one of"),
    ("space.compression.first_layer_bits", 9, "space.compression.first_layer_bits",
     "must be one of"),
    ("space.compression.last_layer_bits", [None, "8"], "space.compression.last_layer_bits[1]",
     "expected int"),
]


@pytest.mark.parametrize(("path", "value", "key", "words"), BAD,
                         ids=[f"{p}={v!r}"[:60] for p, v, *_ in BAD])
def test_bad_values(tmp_path: Path, capsys: pytest.CaptureFixture[str], path: str,
                    value: object, key: str, words: str) -> None:
    exp = write(tmp_path, _mutate(base(), path, value))
    before = files_under(tmp_path)
    assert main(["validate", str(exp)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no error printed"
    assert all(line.startswith(f"error: {exp}: ") for line in err), err
    assert any(f": {key}: " in line and words in line for line in err), err
    assert "Traceback" not in "\n".join(err)
    assert files_under(tmp_path) == before


def test_all_problems_reported_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = base()
    d["study"]["n_trials"] = -3
    d["task"]["batch_size"] = "big"
    d["bogus"] = 1
    exp = write(tmp_path, d)
    assert main(["validate", str(exp)]) == 2
    err = capsys.readouterr().err
    assert "study.n_trials" in err and "task.batch_size" in err and "bogus: unknown key" in err
    assert "known:" in err


def test_missing_data_dir_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = base()
    d["task"].update(dataset="mnist", data_dir=str(tmp_path / "nowhere"))
    exp = write(tmp_path, d)
    assert main(["validate", str(exp)]) == 2
    err = capsys.readouterr().err
    assert "task.data_dir" in err and "nowhere" in err


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("schema_version: 1\nstudy: {name: x\n", "malformed YAML"),
        ("schema_version: 1\nstudy:\n  name: a\n  name: b\n", "duplicate key 'name'"),
        ("- just\n- a list\n", "expected a mapping"),
        ("schema_version: 1\nstudy: !!python/object/apply:os.system ['touch PWNED']\n",
         "is refused"),
        ("schema_version: 1\nstudy: !!python/name:os.system\n", "is refused"),
        ("", "expected a mapping"),
    ],
    ids=["unclosed", "duplicate", "list", "python-apply", "python-name", "empty"],
)
def test_bad_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
                  words: str) -> None:
    exp = write(tmp_path, text)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert main(["validate", str(exp)]) == 2
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {exp}: ") and words in err[0], err
    assert not (tmp_path / "PWNED").exists()


def test_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "does/not/exist.yaml"]) == 2
    assert capsys.readouterr().err.strip() == "error: does/not/exist.yaml: file: not found"


def test_config_error_type() -> None:
    with pytest.raises(ConfigError) as e:
        load("does/not/exist.yaml")
    assert e.value.problems == [("file", "not found")]


@pytest.mark.parametrize(
    "storage",
    ["postgresql://nobody@127.0.0.1:1/nodb", "sqlite:///no/such/folder/x.db", "redis://x",
     "sqlite://", "sqlite:///:memory:", "journal:"],
)
def test_unreachable_storage(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch, storage: str) -> None:
    exp = write(tmp_path, base())
    monkeypatch.chdir(tmp_path)
    before = files_under(tmp_path)
    assert main(["run", str(exp), "--storage", storage, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {storage}: "), err
    assert files_under(tmp_path) == before


def test_real_command_line_has_no_traceback(tmp_path: Path) -> None:
    exp = write(tmp_path, "schema_version: 1\nstudy: {name: ok, n_trials: many}\n")
    proc = subprocess.run([sys.executable, "-m", "codesign", "validate", str(exp)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"error: {exp}: study.n_trials: expected int, got 'many' (str)"
    )
    assert proc.stdout == ""
    assert sorted(os.listdir(tmp_path)) == ["exp.yaml"]


@pytest.mark.parametrize("command", [["inspect", "typo"], ["resume", "typo"],
                                     ["export", "typo", "--out", "x"],
                                     ["plot", "typo", "--out", "p.png"]])
def test_read_only_commands_create_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch,
                                           command: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(command) == 2
    assert "no such database file" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("flag", "value"), [
    ("--n-trials", "0"), ("--n-trials", "-1"), ("--n-trials", "two"),
    ("--workers", "-1"), ("--workers", "two")])  # --workers 0: in this process, no Ray
def test_counts_must_be_positive(flag: str, value: str) -> None:
    with pytest.raises(SystemExit) as e:
        main(["run", str(QUICKSTART), flag, value])
    assert e.value.code == 2


def test_warm_start_checkpoint_must_exist_and_be_a_state_dict(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    d = base()
    d["task"].update(warm_start="checkpoint", warm_start_checkpoint="missing.pt")
    exp = write(tmp_path, d)
    monkeypatch.chdir(tmp_path)
    assert main(["validate", str(exp)]) == 2
    assert "task.warm_start_checkpoint: file not found" in capsys.readouterr().err
    (tmp_path / "missing.pt").write_bytes(b"\x80\x04not a torch file")
    assert main(["run", str(exp), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "task.warm_start_checkpoint" in err[0], err
    assert "not a readable torch state dict" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml", "missing.pt"]


@pytest.mark.parametrize(("key", "value"), [("gpus_per_trial", 64), ("cpus_per_trial", 4096)])
def test_unschedulable_trials_refused_before_anything_is_created(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        key: str, value: int) -> None:
    d = base()
    d["execution"][key] = value
    exp = write(tmp_path, d)
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(exp), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"execution: {key}=" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml"]
