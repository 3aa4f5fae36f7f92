"""The ``trellis`` command line (needs the ``cli`` extra: typer and rich).

Commands live one group per module: ``run`` (run.py), ``draw`` (draw.py),
``history``/``state``/``threads``/``prune`` (history.py); ``app.py`` wires
them into one typer app.
"""
