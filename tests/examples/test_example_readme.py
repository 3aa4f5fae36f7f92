"""README.md: the quick start runs as printed, and what it points at exists."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_the_quick_start_runs_and_prints_what_its_comments_say() -> None:
    section = README.split("## Quick start", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert code is not None
    assert len(code.group(1).splitlines()) <= 30
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code.group(1), "README.md", "exec", dont_inherit=True), {"__name__": "readme"})
    paused, done = out.getvalue().splitlines()
    assert "refund order 1234?" in paused
    assert "'approved': True" in done
    assert "'log': ['checked order 1234', 'a human answered']" in done


def test_the_set_up_commands_and_example_links_exist() -> None:
    for script in ("scripts/example", "scripts/test"):
        assert f"./{script}" in README
        assert os.access(ROOT / script, os.X_OK), script
    links = set(re.findall(r"\]\((examples/[a-z_]+\.py)\)", README))
    shipped = {f"examples/{p.name}" for p in (ROOT / "examples").glob("*.py")}
    assert links == shipped - {"examples/__init__.py"}, "every example is linked, and only those"
