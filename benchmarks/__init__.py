"""Side-by-side benchmarks: Trellis, LangGraph and pydantic-graph on the same shapes.

Run ``.venv/bin/python -m benchmarks --help``; see ``benchmarks/README.md`` for how
to read the table. Timings are reported, never asserted.
"""
