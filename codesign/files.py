"""Writing outputs without ever deleting or overwriting what codesign did not create.

- :func:`write_atomic`: a file is written to a temporary sibling, then moved into place.
- :func:`check_target`: refuses output paths that are the working folder, one of its
  parents, or the codesign source tree or one of its parents.
- :func:`publish_folder`: moves a folder built in a temporary sibling into its place. A
  previous codesign output there (recognized by its manifest, :data:`MANIFEST`) is replaced
  file by file: only the files that manifest lists are removed, so a file someone added
  beside them stays. Any other non-empty folder is refused.
- :func:`claim_file`: whether a single output file (a plot) may be replaced: it is new, or
  codesign wrote it (its own marker inside).

Every refusal raises :class:`~codesign.errors.OutputError` (exit code 2) before anything is
written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from codesign.errors import OutputError

MANIFEST = ".codesign-export.json"  # the marker and file list of a codesign export folder
MANIFEST_VERSION = 1
SOURCE_ROOT = Path(__file__).resolve().parents[1]  # the checkout (or site-packages) holding us


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_target(path: str | os.PathLike[str], option: str) -> Path:
    """The resolved ``path``, unless it is a folder codesign must never write into as a whole:
    the working folder or a parent of it, or the codesign source tree or a parent of it.

    Raises:
        OutputError: one line naming ``option`` and why.
    """
    target = Path(path).expanduser().resolve()
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        what = "the working folder" if target == cwd else "a parent of the working folder"
        raise OutputError(f"{option}: {path}: is {what}; give a folder of its own, e.g. "
                          "exports/NAME")
    if target == SOURCE_ROOT or target in SOURCE_ROOT.parents:
        raise OutputError(f"{option}: {path}: is the codesign source tree or one of its "
                          "parents; give a folder of its own, e.g. exports/NAME")
    return target


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of a codesign export in ``folder``, or ``None`` if it holds none.

    Only plain relative paths inside the folder are accepted as listed files: a manifest
    naming ``..`` or an absolute path is not codesign's, and the folder is treated as foreign.
    """
    try:
        doc = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    files = doc.get("files") if isinstance(doc, dict) else None
    if doc.get("codesign_export") != MANIFEST_VERSION or not isinstance(files, list):
        return None
    for f in files:
        if not isinstance(f, str) or not _plain_relative(f):
            return None
    return doc


def _plain_relative(rel: str) -> bool:
    p = PurePosixPath(rel)
    return bool(rel) and not p.is_absolute() and ".." not in p.parts and "\\" not in rel


def _files_under(root: Path) -> list[str]:
    """Every file (and symbolic link) under ``root``, as sorted POSIX relative paths."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        links = [d for d in dirnames if (base / d).is_symlink()]  # never followed
        for name in [*filenames, *links]:
            out.append((base / name).relative_to(root).as_posix())
    return sorted(out)


def check_folder(out: Path, option: str, *, overwrite: bool) -> dict[str, Any] | None:
    """May a new export be published at ``out``? Returns the manifest of the earlier export
    it will replace (``None``: nothing to replace).

    Raises:
        OutputError: ``out`` is a file; or a non-empty folder that is no codesign export; or
            an earlier export and ``overwrite`` is not set.
    """
    if out.exists() and not out.is_dir():
        raise OutputError(f"{option}: {out}: exists and is not a folder")
    if not out.exists() or not any(out.iterdir()):
        return None
    manifest = read_manifest(out)
    if manifest is None:
        raise OutputError(f"{option}: {out}: is not empty and holds no codesign export "
                          f"(no {MANIFEST}); give a new or empty folder (codesign never "
                          "deletes files it did not write)")
    if not overwrite:
        raise OutputError(f"{option}: {out}: holds an earlier export of study "
                          f"{manifest.get('study')!r}; add --overwrite to replace it (files "
                          "codesign did not write there are kept)")
    return manifest


def publish_folder(tmp: Path, out: Path, manifest: dict[str, Any] | None,
                   meta: dict[str, Any]) -> list[str]:
    """Move the folder ``tmp`` (built next to ``out``) into place and write its manifest.

    With ``manifest`` (an earlier export at ``out``, from :func:`check_folder`) only the
    files it lists are replaced or removed; every other file in ``out`` stays.

    Returns:
        The files in ``out`` that codesign did not write and kept.

    Raises:
        OutputError: a new file would replace one that codesign did not write (nothing has
            been changed then).
    """
    new_files = _files_under(tmp)
    doc = {"codesign_export": MANIFEST_VERSION, **meta, "files": new_files}
    (tmp / MANIFEST).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    if manifest is None:
        if out.exists():
            out.rmdir()  # empty (checked): os.replace needs it gone or empty
        os.replace(tmp, out)
        return []
    ours = {f for f in manifest["files"] if _regular(out / f)} | {MANIFEST}
    foreign = [f for f in _files_under(out) if f not in ours]
    clash = _clashes(new_files, set(foreign))
    if clash:
        raise OutputError(f"--out: {out}: the new export would replace {clash}, which codesign "
                          "did not write; move it away or give another folder")
    trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    moved: list[str] = []
    try:
        for rel in sorted(ours):
            if (out / rel).exists():
                _move(out / rel, trash / rel)
                moved.append(rel)
        for rel in [*new_files, MANIFEST]:
            _move(tmp / rel, out / rel)
    except BaseException:
        for rel in moved:  # best effort: put the earlier export back
            if (trash / rel).exists() and not (out / rel).exists():
                _move(trash / rel, out / rel)
        raise
    _remove_empty_dirs(out, (Path(rel).parent for rel in ours))
    shutil.rmtree(trash, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)
    return foreign


def _regular(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def _clashes(new_files: list[str], foreign: set[str]) -> str | None:
    """The first foreign path a new file (or one of its folders) would land on."""
    for rel in new_files:
        parts = PurePosixPath(rel).parts
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if sub in foreign:
                return sub
    return None


def _move(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)


def _remove_empty_dirs(root: Path, dirs: Iterable[Path]) -> None:
    """Remove the folders ``dirs`` (relative to ``root``) and their parents below ``root``
    where they are empty now."""
    for rel in sorted({d for d in dirs if str(d) != "."}, key=lambda d: -len(d.parts)):
        for d in [rel, *rel.parents]:
            if str(d) == ".":
                break
            try:
                (root / d).rmdir()
            except OSError:
                break  # not empty (or gone): leave it and its parents


def own_file(path: str | None, artifacts: Path) -> Path | None:
    """``path`` if it is a regular file inside the study's ``artifacts`` folder (links
    resolved), else ``None``: a study's attributes never make codesign read another file."""
    if not path:
        return None
    p = Path(path).resolve()
    if not p.is_file() or not p.is_relative_to(artifacts.resolve()):
        return None
    return p


# ----------------------------------------------------------------------------- single files

PLOT_MARK = b"codesign plot"  # in a PNG's Software text chunk and an HTML file's generator


def claim_file(path: str | os.PathLike[str], option: str) -> Path:
    """``path`` resolved, if a codesign output file may be written there: it does not exist
    yet, or it is one codesign wrote (it carries :data:`PLOT_MARK` in its first 4 KiB).

    Raises:
        OutputError: a folder, a missing folder, or a file codesign did not write.
    """
    out = Path(path)
    if out.is_dir():
        raise OutputError(f"{option}: {out}: is a folder; give a file name, e.g. "
                          f"{out / 'front.png'}")
    if not out.parent.is_dir():
        raise OutputError(f"{option}: {out}: folder {str(out.parent)!r} does not exist")
    if out.exists() or out.is_symlink():
        try:
            with open(out, "rb") as f:
                head = f.read(4096)
        except OSError:
            head = b""
        if out.is_symlink() or PLOT_MARK not in head:
            raise OutputError(f"{option}: {out}: exists and was not written by codesign; "
                              "remove it or give another file name")
    return out
