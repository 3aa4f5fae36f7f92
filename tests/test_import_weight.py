"""``import trellis`` stays light: what it loads is what its import time and memory cost."""

from __future__ import annotations

import subprocess
import sys


def test_import_trellis_loads_no_asyncio_network_or_langchain() -> None:
    heavy = ["asyncio", "urllib.request", "langchain_core", "psycopg"]
    code = f"import sys, trellis; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
