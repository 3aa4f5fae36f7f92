"""Running a graph.

``plan`` compiles a builder into flat tables; ``loop`` is the I/O-free
super-step loop (what runs next, applying writes); ``drivers`` are its thin sync
and async drivers; ``compiled`` is the public ``CompiledStateGraph``. Around
them: ``durable`` (checkpoints, resume), ``interrupts``, ``guard`` (retries,
timeouts, breakers, approval gates), ``once``, ``saga`` (compensations),
``state`` (history and time travel), ``subgraph``, ``observing`` (events) and
``streaming`` (stream-mode shaping).
"""
