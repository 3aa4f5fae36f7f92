"""The reference notebook's workflows, rebuilt on Trellis.

Each module exposes ``graph`` (compiled, ready to ``invoke``) and ``build()``
(the uncompiled ``StateGraph``, to compile with a checkpointer or options).
Run one from the shell with ``trellis run examples.<name>:graph --input '{...}'``.
"""
