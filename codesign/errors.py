"""Exception types of the orchestration layer (the CLI maps each to an exit code)."""

from __future__ import annotations


class CodesignError(Exception):
    """Base class: a user-facing problem with a one-line message (exit code 2)."""


class StorageError(CodesignError):
    """The study storage cannot be opened, or the study is not in it."""


class StudyConflict(CodesignError):
    """A study of that name exists with a different experiment."""


class RunAborted(Exception):
    """The run stopped before reaching its target (too many failures): exit code 1."""


class Interrupted(CodesignError):
    """Ctrl-C / SIGTERM: finished trials are kept, in-flight ones were marked failed."""


class OutputError(CodesignError):
    """An output path that codesign refuses to write (it would delete or overwrite what
    codesign did not create, or it names the working folder itself)."""
