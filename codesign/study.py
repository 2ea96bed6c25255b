"""Open, create and resume Optuna studies on durable storage.

Storage is chosen by URL, one code path (``optuna.storages``):

- ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (the default,
  ``sqlite:///runs/<name>.db``),
- ``postgresql://user@host:port/db`` (several drivers sharing one study; the password
  from ``PGPASSWORD`` / ``~/.pgpass`` or in the URL). It needs a PostgreSQL driver: psycopg 3
  (``pip install "codesign[postgres]"``) or, where only that is installed, psycopg2;
  ``postgresql+psycopg://`` / ``postgresql+psycopg2://`` name one. A server that does not
  answer is an error after 5 s (``connect_timeout``); an ``@`` in the user name or password
  must be written ``%40``,
- ``journal:path/to/file.log`` (Optuna's journal file, for shared file systems).

Driver processes are the only writers (several may share a PostgreSQL or journal study:
docs/cluster.md); workers never see the storage. The study keeps the resolved experiment,
its fingerprint, package versions and the git revision as user attributes, so ``resume``,
``inspect`` and ``export`` never need the original YAML.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import importlib.metadata
import os
import shlex
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from codesign.config import SCHEMA_VERSION, ExperimentConfig, from_mapping
from codesign.errors import StorageError, StudyConflict
from codesign.urls import display_url, has_password, without_password

A = "codesign."  # prefix of every study and trial user attribute codesign writes
ATTR_EXPERIMENT = "codesign.experiment"
ATTR_FINGERPRINT = "codesign.fingerprint"
ATTR_PROVENANCE = "codesign.provenance"
ATTR_OBJECTIVES = "codesign.objectives"
ATTR_ARTIFACTS = "codesign.artifacts_dir"  # where the study's trained weights are kept
ATTR_TARGET = "codesign.n_trials_target"  # the finished-design target of the latest session


def _sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite:///"):
        return None
    rest = url[len("sqlite:///"):].split("?", 1)[0]
    return None if rest in ("", ":memory:") else Path(rest)


def open_storage(
    url: str, *, create_dirs: bool = False, must_exist: bool = False
) -> optuna.storages.BaseStorage:
    """Open the storage at ``url``.

    Args:
        url: see the module docstring.
        create_dirs: create the parent folder of a SQLite or journal file (used for the
            default ``runs/`` folder); otherwise a missing folder is an error.
        must_exist: the SQLite or journal file must already exist (commands that only read
            or continue a study never create one).

    Raises:
        StorageError: one line saying what is wrong with the URL or the server.
    """
    shown = display_url(url)
    if url.startswith("sqlite:") and _sqlite_path(url) is None:
        raise StorageError(f"{shown}: an in-memory database would lose the study; give a file, "
                           "e.g. sqlite:///runs/NAME.db")
    if url.startswith("journal:"):
        path = _storage_file(url)
        assert path is not None
        if not str(path) or str(path) == ".":
            raise StorageError(f"{shown}: give a journal file, e.g. journal:runs/NAME.log")
        if must_exist and not path.is_file():
            raise StorageError(f"{shown}: no such journal file")
        _check_parent(url, path, create_dirs)
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        try:
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as e:
            raise StorageError(f"{shown}: cannot open the journal file ({e})") from None
    scheme = url.split(":", 1)[0]
    if scheme not in ("sqlite", "postgresql", "postgresql+psycopg2", "postgresql+psycopg",
                      "mysql", "mysql+pymysql"):
        raise StorageError(f"{shown}: unsupported storage URL; use sqlite:///FILE.db, "
                           "postgresql://USER@HOST/DB or journal:FILE.log")
    if "@" in url.partition("://")[2].rpartition("@")[0]:
        # SQLAlchemy ends the password at its first @ and takes the rest for the host name,
        # which the driver's error message would then show
        raise StorageError(f"{shown}: the user name or password holds an unescaped '@': "
                           "write it as %40, or leave the password out of the URL and put it "
                           "in PGPASSWORD or ~/.pgpass")
    if scheme == "postgresql":
        url = _postgresql_driver(url)
    engine_kwargs: dict[str, Any] = {}
    sqlite = _sqlite_path(url)
    if sqlite is not None:
        created = not sqlite.exists()
        if must_exist and created:
            raise StorageError(f"{shown}: no such database file")
        _check_parent(url, sqlite, create_dirs)
        engine_kwargs = {"connect_args": {"timeout": 30}}
    else:
        created = False
        if scheme.startswith("postgresql"):
            engine_kwargs = {"connect_args": {"connect_timeout": 5}}
    try:
        # RDBStorage fills ``{SCHEMA_VERSION}`` into the URL with str.format: braces (in a
        # password, say) are doubled so that they reach the database as they were written
        return _rdb_storage(url.replace("{", "{{").replace("}", "}}"), engine_kwargs)
    except ImportError as e:  # Optuna re-raises the driver's ImportError as a plain one
        missing = _missing_module(e)
        hint = _DRIVER_HINTS.get(scheme, "install the database driver")
        raise StorageError(f"{shown}: the database driver is not installed"
                           f"{f' ({missing})' if missing else ''}; {hint}") from None
    except Exception as e:  # sqlalchemy raises many types; all mean "cannot open"
        if sqlite is not None and created and sqlite.exists():
            sqlite.unlink()  # leave nothing half-made behind
        lines = str(getattr(e, "orig", None) or e).strip().splitlines()
        reason = " ".join(lines[0].split()) if lines else type(e).__name__
        raise StorageError(f"{shown}: cannot open the storage ({reason})") from None


def _rdb_storage(url: str, engine_kwargs: dict[str, Any]) -> optuna.storages.RDBStorage:
    """``RDBStorage(url)``. Two drivers started at once on an empty database both create
    Optuna's tables; the one that loses that race ("already exists", a unique violation on
    the catalog) opens the storage again, finding them made."""
    for attempt in range(3):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                              skip_compatibility_check=False)
        except Exception as e:  # sqlalchemy's ProgrammingError / IntegrityError
            text = str(getattr(e, "orig", None) or e)
            racing = ("already exists", "duplicate key", "UNIQUE constraint failed",
                      "database is locked")
            if attempt == 2 or not any(r in text for r in racing):
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


_POSTGRES_HINT = 'run `pip install "codesign[postgres]"` (psycopg 3)'
_DRIVER_HINTS = {
    "postgresql": _POSTGRES_HINT,
    "postgresql+psycopg": _POSTGRES_HINT,
    "postgresql+psycopg2": "run `pip install psycopg2-binary`, or use postgresql:// with "
                           '`pip install "codesign[postgres]"`',
    "mysql": "run `pip install mysqlclient`, or use mysql+pymysql:// with `pip install pymysql`",
    "mysql+pymysql": "run `pip install pymysql`",
}


def _postgresql_driver(url: str) -> str:
    """``postgresql://`` with the PostgreSQL driver that is installed: psycopg 3 (SQLAlchemy
    2.1's default), else psycopg2 (the default of older SQLAlchemy). The URL names it
    (``postgresql+psycopg://``), so that any SQLAlchemy version uses that one.

    Raises:
        StorageError: neither can be imported.
    """
    _, sep, rest = url.partition("://")
    if not sep:
        return url  # not a URL SQLAlchemy reads; it says so
    broken = ""
    for module, scheme in (("psycopg", "postgresql+psycopg"),
                           ("psycopg2", "postgresql+psycopg2")):
        try:
            importlib.import_module(module)
        except ImportError as e:  # missing, or installed without what it needs (libpq)
            if not (isinstance(e, ModuleNotFoundError) and e.name == module):
                why = " ".join(str(e).split())
                broken = broken or f"; {module} is installed but does not import ({why})"
            continue
        return f"{scheme}://{rest}"
    raise StorageError(f"{display_url(url)}: no PostgreSQL driver is installed (psycopg or "
                       f"psycopg2){broken}; {_POSTGRES_HINT}")


def _missing_module(e: BaseException) -> str | None:
    """The name of the module whose import failed, following ``raise ... from``."""
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, ModuleNotFoundError) and seen.name:
            return seen.name
        seen = seen.__cause__ or seen.__context__
    return None


def _check_parent(url: str, path: Path, create: bool) -> None:
    shown = display_url(url)
    parent = path.parent if str(path.parent) else Path(".")
    if parent.is_dir():
        return
    if create:
        parent.mkdir(parents=True, exist_ok=True)
        return
    raise StorageError(f"{shown}: folder {str(parent)!r} does not exist")


def provenance() -> dict[str, Any]:
    """Package versions, git revision and time: stored with every study."""
    versions = {}
    for pkg in ("codesign", "optuna", "torch", "ray", "numpy"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "versions": versions,
        "git_revision": git_revision(),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def git_revision() -> str | None:
    """The git revision of the codesign source tree, ``None`` outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                           capture_output=True, text=True, timeout=5, check=False).stdout
    return out.stdout.strip() + ("+dirty" if dirty.strip() else "")


def study_exists(storage: optuna.storages.BaseStorage, name: str) -> bool:
    return any(s.study_name == name for s in storage.get_all_studies())


def create_or_load(
    cfg: ExperimentConfig, storage: optuna.storages.BaseStorage, url: str, *, sampler: Any
) -> tuple[optuna.Study, bool]:
    """Create the study of ``cfg``, or load it if it exists with the same experiment. Of
    drivers that start together on a shared storage, one creates it and the others load it.

    Returns:
        ``(study, created)``.

    Raises:
        StudyConflict: a study of that name exists with a different experiment.
    """
    name = cfg.study.name
    if study_exists(storage, name):
        if ATTR_FINGERPRINT not in storage.get_study_user_attrs(
                storage.get_study_id_from_name(name)):
            _wait_for_user_attr(storage, name, ATTR_ARTIFACTS)  # another driver is making it
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        stored = study.user_attrs.get(ATTR_FINGERPRINT)
        if stored != cfg.fingerprint():
            old = study.user_attrs.get(ATTR_EXPERIMENT, {})
            changed = _diff_keys(old, cfg.resolved, _defaults())
            if not changed:  # only keys a newer codesign added, at their default values
                study.set_user_attr(ATTR_EXPERIMENT, cfg.resolved)
                study.set_user_attr(ATTR_FINGERPRINT, cfg.fingerprint())
                return study, False
            raise StudyConflict(
                f"study {name!r} already exists in this storage with a different experiment "
                f"(changed: {', '.join(changed) or 'unknown'}); choose a new study.name, or "
                f"{suggest('resume', name, url)} to continue the stored experiment"
            )
        old = study.user_attrs.get(ATTR_EXPERIMENT, {})
        if isinstance(old, dict) and old.get("report") != cfg.resolved.get("report"):
            # how the study is scored (not part of the fingerprint): the file's from now on
            study.set_user_attr(ATTR_EXPERIMENT, {**old, "report": cfg.resolved.get("report")}
                                if "report" in cfg.resolved else
                                {k: v for k, v in old.items() if k != "report"})
        kept = study.user_attrs.get(ATTR_ARTIFACTS)
        wanted = cfg.study.artifacts_dir
        if kept and wanted and Path(wanted).resolve() != Path(kept).resolve():
            raise StudyConflict(
                f"study {name!r} keeps its weights in {kept} (chosen when it was created); "
                f"study.artifacts_dir {wanted} differs: leave study.artifacts_dir out, or set "
                "it to that folder")
        return study, False
    try:
        study = optuna.create_study(study_name=name, storage=storage, sampler=sampler,
                                    directions=cfg.directions)
    except optuna.exceptions.DuplicatedStudyError:
        # another driver (several share a database server) made it since the check above:
        # join it as a later driver does, once that one has stored its experiment
        _wait_for_user_attr(storage, name, ATTR_ARTIFACTS)
        return create_or_load(cfg, storage, url, sampler=sampler)
    study.set_metric_names(list(cfg.objectives))
    study.set_user_attr(ATTR_EXPERIMENT, cfg.resolved)
    study.set_user_attr(ATTR_FINGERPRINT, cfg.fingerprint())
    study.set_user_attr(ATTR_OBJECTIVES, list(cfg.objectives))
    study.set_user_attr(ATTR_PROVENANCE, provenance())
    study.set_user_attr(ATTR_ARTIFACTS, str(cfg.study.artifacts_dir
                                            or default_artifacts_dir(name, url)))
    return study, True


def _wait_for_user_attr(storage: optuna.storages.BaseStorage, name: str, key: str,
                        timeout: float = 30.0) -> None:
    """Wait (at most ``timeout`` seconds) until study ``name`` has the user attribute ``key``:
    a study another driver is creating gets its attributes right after it (``key``: the last
    one :func:`create_or_load` writes). Without it by then, the caller reports the study as
    it is."""
    study_id = storage.get_study_id_from_name(name)
    deadline = time.monotonic() + timeout
    while key not in storage.get_study_user_attrs(study_id) and time.monotonic() < deadline:
        time.sleep(0.2)


_MISSING = object()


def _defaults() -> dict[str, Any]:
    """The resolved experiment of a file that sets nothing but a name: every default."""
    minimal = {"schema_version": SCHEMA_VERSION, "study": {"name": "defaults"},
               "strategy": {}}  # a section only stored when given: its defaults too
    return from_mapping(minimal, check_data=False).resolved


def _diff_keys(old: Any, new: Any, defaults: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ. A key the stored (``old``) experiment lacks is no
    change when the new value is its default: a newer codesign added it with the behaviour
    the older one had."""
    ignore = {"execution", "study.n_trials", "study.storage", "study.artifacts_dir",
              "report"}  # report: how the study is scored, stored anew when it changes
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        defaults = defaults if isinstance(defaults, dict) else {}
        for k in sorted(set(old) | set(new)):
            p = f"{prefix}.{k}" if prefix else str(k)
            if p in ignore:
                continue
            if k not in old and new[k] == defaults.get(k, _MISSING):
                continue
            out += _diff_keys(old.get(k), new.get(k), defaults.get(k), p)
        return out
    return [] if old == new else [prefix]


def load_existing(
    name: str, storage: optuna.storages.BaseStorage, url: str
) -> tuple[optuna.Study, ExperimentConfig]:
    """Load a codesign study by name and rebuild its experiment from the stored copy."""
    shown = display_url(url)
    if not study_exists(storage, name):
        names = [s.study_name for s in storage.get_all_studies()]
        raise StorageError(f"{shown}: no study named {name!r} (studies here: "
                           f"{', '.join(names) or 'none'})")
    study = optuna.load_study(study_name=name, storage=storage)
    raw = study.user_attrs.get(ATTR_EXPERIMENT)
    if raw is None:
        raise StorageError(f"{shown}: study {name!r} was not made by codesign (no stored "
                           "experiment)")
    cfg = from_mapping(raw, source=f"{shown}#{name}", check_data=False)
    return study, cfg


def counts_by_state(study: optuna.Study,
                    trials: Iterable[FrozenTrial] | None = None) -> dict[str, int]:
    """Trials by state (``trials``: the study's, already read)."""
    counts = {s.name.lower(): 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False) if trials is None else trials:
        counts[t.state.name.lower()] += 1
    return counts


def default_url(name: str) -> str:
    return f"sqlite:///runs/{name}.db"


def is_default_url(url: str, name: str) -> bool:
    """Whether ``url`` names the file ``default_url(name)`` does (from this folder)."""
    file = _sqlite_path(url)
    return file is not None and file.resolve() == Path("runs", f"{name}.db").resolve()


def command_hint(verb: str, name: str, url: str, *extra: str) -> str:
    """The ``codesign VERB NAME ...`` command line that reaches study ``name`` in ``url``:
    ``--storage`` is given unless ``url`` is the default location. A password is never
    printed: the command names the URL without it (see :func:`suggest`)."""
    words = ["codesign", verb, shlex.quote(name)]
    if not is_default_url(url, name):
        words += ["--storage", shlex.quote(without_password(url))]
    return " ".join([*words, *map(shlex.quote, extra)])


def suggest(verb: str, name: str, url: str, *extra: str) -> str:
    """A command as a message suggests it: in backticks, copied as it stands; where the URL
    had a password, a note after it says where the database client takes it from."""
    text = f"`{command_hint(verb, name, url, *extra)}`"
    if has_password(url):
        where = ("PGPASSWORD or ~/.pgpass" if url.lower().startswith("postgres")
                 else "the --storage URL, which codesign does not repeat")
        text += f" (with the database password in {where})"
    return text


def _storage_file(url: str) -> Path | None:
    """The file behind a SQLite or journal URL (``None`` for a database server)."""
    if url.startswith("journal:"):
        return Path(url[len("journal:"):].removeprefix("//"))
    return _sqlite_path(url)


def default_artifacts_dir(name: str, url: str) -> Path:
    """Where a new study keeps its trained weights unless ``study.artifacts_dir`` says:
    beside its SQLite or journal file (``runs/NAME.db`` -> ``runs/NAME-artifacts``), else
    (a database server) ``runs/NAME-artifacts`` in the working folder. Absolute."""
    file = _storage_file(url)
    if file is None:
        return Path("runs", f"{name}-artifacts").resolve()
    return (file.parent / f"{file.stem}-artifacts").resolve()


def artifacts_dir(study: optuna.Study, cfg: ExperimentConfig, url: str) -> Path:
    """The folder holding ``study``'s trained weights: the one chosen when it was created
    (a study begun by an older codesign: its stored ``study.artifacts_dir``)."""
    stored = study.user_attrs.get(ATTR_ARTIFACTS) or cfg.study.artifacts_dir
    return Path(stored) if stored else default_artifacts_dir(study.study_name, url)


def is_default_location(url: str) -> bool:
    """True for URLs under ``runs/`` whose folder codesign may create."""
    p = _storage_file(url)
    return p is not None and os.path.normpath(str(p.parent)) == "runs"
