"""Writing outputs without ever deleting or overwriting what codesign did not create.

- :func:`write_atomic`: a file is written to a temporary sibling, then moved into place.
- :func:`check_target`: refuses output paths that are the working folder, one of its
  parents, or the codesign source tree or one of its parents.
- :func:`publish_folder`: moves a folder built in a temporary sibling into its place. A
  previous codesign output there (recognized by its manifest, :data:`MANIFEST`, which lists
  every file it wrote with its SHA-256) is replaced file by file: only the files that
  manifest lists, still unchanged, are removed, so a file someone added (or edited) stays.
  Any other non-empty folder is refused.
- :func:`claim_file`: whether a single output file (a plot) may be replaced: it is new, or
  codesign wrote it (its own marker inside).

Every refusal raises :class:`~codesign.errors.OutputError` (exit code 2) before anything is
written.
"""

from __future__ import annotations

import hashlib
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder (mode: the
    replaced file's, else what the umask gives a new file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o7777 if path.is_file() else 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def make_folder_like_new(root: Path) -> None:
    """Give ``root`` and its sub-folders the mode a new folder gets (``mkdtemp`` makes them
    private), before a temporary build folder becomes the user's output."""
    mode = 0o777 & ~_umask()
    for dirpath, _, _ in os.walk(root):
        os.chmod(dirpath, mode)


def check_target(path: str | os.PathLike[str], option: str) -> Path:
    """The resolved ``path``, unless it is a folder codesign must never write into as a whole:
    the working folder or a parent of it, or the codesign source tree or a parent of it (or a
    broken symbolic link).

    Raises:
        OutputError: one line naming ``option`` and why.
    """
    given = Path(path).expanduser()
    if given.is_symlink() and not given.exists():
        raise OutputError(f"{option}: {path}: is a broken symbolic link")
    target = given.resolve()
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

    ``files`` maps each file the export wrote (a plain relative path) to its SHA-256. A
    manifest naming ``..`` or an absolute path is not codesign's: the folder is foreign.
    """
    try:
        doc = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    files = doc.get("files") if isinstance(doc, dict) else None
    if doc.get("codesign_export") != MANIFEST_VERSION or not isinstance(files, dict):
        return None
    for rel, digest in files.items():
        if not (isinstance(rel, str) and _plain_relative(rel) and isinstance(digest, str)):
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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def publish_folder(tmp: Path, out: Path, manifest: dict[str, Any] | None,
                   meta: dict[str, Any]) -> list[str]:
    """Move the folder ``tmp`` (built next to ``out``) into place and write its manifest.

    With ``manifest`` (an earlier export at ``out``, from :func:`check_folder`) only the
    files it lists are replaced or removed, and only where they are still what that export
    wrote (same content, reached through no symbolic link); every other file in ``out``
    stays. If a move fails half-way, what was moved is moved back.

    Returns:
        The files in ``out`` that codesign did not write (or that were changed since) and
        kept.

    Raises:
        OutputError: ``out`` changed since it was checked, or a new file would replace one
            that codesign did not write (nothing has been changed then).
    """
    new_files = _files_under(tmp)
    doc = {"codesign_export": MANIFEST_VERSION, **meta,
           "files": {rel: _sha256(tmp / rel) for rel in new_files}}
    (tmp / MANIFEST).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    make_folder_like_new(tmp)
    if manifest is None:
        try:
            if out.exists():
                out.rmdir()  # empty (checked): os.replace needs it gone or empty
            os.replace(tmp, out)
        except OSError as e:
            raise OutputError(f"--out: {out}: changed while the export was written ({e}); "
                              "nothing was written there") from None
        return []
    if read_manifest(out) != manifest:
        raise OutputError(f"--out: {out}: changed while the export was written; nothing was "
                          "replaced")
    present = set(_files_under(out))  # os.walk never enters a linked folder
    ours = {rel for rel, digest in manifest["files"].items()
            if rel in present and _unlinked(out, rel) and _sha256(out / rel) == digest}
    ours.add(MANIFEST)
    foreign = sorted(present - ours)
    clash = _clash(out, [*new_files, MANIFEST], ours)
    if clash:
        raise OutputError(f"--out: {out}: the new export would replace {clash}, which codesign "
                          "did not write (or which was changed since); move it away or give "
                          "another folder")
    trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    moved: list[str] = []
    placed: list[str] = []
    try:
        for rel in sorted(ours):
            if (out / rel).exists():
                _move(out / rel, trash / rel)
                moved.append(rel)
        for rel in [*new_files, MANIFEST]:
            _move(tmp / rel, out / rel)
            placed.append(rel)
    except BaseException:
        for rel in reversed(placed):  # undo: the new files back, then the earlier export
            _move(out / rel, tmp / rel)
        for rel in moved:
            _move(trash / rel, out / rel)
        shutil.rmtree(trash, ignore_errors=True)
        raise
    _remove_empty_dirs(out, (Path(rel).parent for rel in ours))
    shutil.rmtree(trash, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)
    return foreign


def _unlinked(root: Path, rel: str) -> bool:
    """``root/rel`` is reached through no symbolic link below ``root``."""
    return os.path.realpath(root / rel) == os.path.join(os.path.realpath(root), rel)


def _clash(out: Path, new_files: list[str], ours: set[str]) -> str | None:
    """The first path where a new file would land on something that is not ours: a foreign
    file, folder or link at the file's own path, or a non-folder (or a link) at one of its
    folders."""
    for rel in new_files:
        parts = PurePosixPath(rel).parts
        for i in range(1, len(parts)):
            d = out.joinpath(*parts[:i])
            if d.is_symlink() or (d.exists() and not d.is_dir()):
                return "/".join(parts[:i])
        target = out / rel
        if (target.exists() or target.is_symlink()) and rel not in ours:
            return rel
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


def own_weights(path: str | None, artifacts: Path, training_key: str | None) -> Path | None:
    """``path`` if it is the study's own weights file for ``training_key``, i.e. exactly
    ``<artifacts>/weights/<training_key>.pt`` (links resolved) and a regular file, else
    ``None``: whatever a study's attributes say, codesign reads no other file as weights."""
    if not path or not training_key:
        return None
    p = Path(path).resolve()
    if p != (artifacts / "weights" / f"{training_key}.pt").resolve() or not p.is_file():
        return None
    return p


# ----------------------------------------------------------------------------- single files

PLOT_MARK = b"codesign plot"  # in a PNG's Software text chunk and an HTML file's generator


_PNG_MARK = b"\x89PNG\r\n\x1a\n"  # what a PNG begins with; codesign's carries this text chunk:
_PNG_TEXT = b"tEXtSoftware\x00" + PLOT_MARK
HTML_HEAD = ("<!doctype html><meta charset='utf-8'><meta name='generator' content='"
             + PLOT_MARK.decode() + "'>")  # the first bytes of every HTML figure codesign writes


def written_by_plot(head: bytes) -> bool:
    """Whether a file beginning with ``head`` (its first 4 KiB) is a figure codesign wrote."""
    return (head.startswith(_PNG_MARK) and _PNG_TEXT in head) or head.startswith(
        HTML_HEAD.encode())


def claim_file(path: str | os.PathLike[str], option: str) -> Path:
    """``path``, if a codesign output file may be written there: it does not exist yet, or it
    is a regular file codesign wrote (:func:`written_by_plot`).

    Raises:
        OutputError: a folder, a missing folder, a link, a non-regular file, or a file
            codesign did not write.
    """
    out = Path(path)
    if out.is_dir():
        raise OutputError(f"{option}: {out}: is a folder; give a file name, e.g. "
                          f"{out / 'front.png'}")
    if not out.parent.is_dir():
        raise OutputError(f"{option}: {out}: folder {str(out.parent)!r} does not exist")
    if out.is_symlink() or (out.exists() and not out.is_file()):
        raise OutputError(f"{option}: {out}: is not a regular file; give another file name")
    if out.exists():
        try:
            with open(out, "rb") as f:
                head = f.read(4096)
        except OSError:
            head = b""
        if not written_by_plot(head):
            raise OutputError(f"{option}: {out}: exists and was not written by codesign; "
                              "remove it or give another file name")
    return out
