"""Entry point: ``.venv/bin/python -m benchmarks [--quick] [--only NAME] [--json out.json]``."""

from benchmarks.run import main

raise SystemExit(main())
