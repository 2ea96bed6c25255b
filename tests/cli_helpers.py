"""What the end-to-end tests share: the real ``codesign`` CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0"}


def codesign(*args: str, cwd: Path, timeout: float = 300,
             stdin: str | None = None) -> subprocess.CompletedProcess:
    """``codesign ARGS`` run in ``cwd``; its exit code, stdout and stderr."""
    return subprocess.run([sys.executable, "-m", "codesign", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=timeout, input=stdin)
