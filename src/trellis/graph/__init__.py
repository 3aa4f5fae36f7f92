"""Building a graph: ``StateGraph``, schemas into channels, reducers, validation, drawing.

Nothing here runs a graph; ``StateGraph.compile()`` hands the builder to
``trellis.engine``, which turns it into tables and runs it.
"""
