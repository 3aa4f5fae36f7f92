"""The ``trellis`` command line (needs the ``cli`` extra: typer and rich).

Commands live one group per module: ``run`` (run.py), ``draw`` (draw.py),
``history``/``state``/``threads``/``prune`` (history.py), ``trace``/``diff``
(trace.py), ``approvals`` (approvals.py); ``app.py`` wires them into one typer
app.
"""
