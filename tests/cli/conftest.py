"""Every CLI test runs from the repository root, as a user would run ``trellis``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    # `trellis run examples.x:graph` imports from the current directory, like
    # `python -m`; the CLI may add it to sys.path, so each test gets its own copy.
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "path", list(sys.path))
