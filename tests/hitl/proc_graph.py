"""A gated graph driven from separate processes by the restart and race tests.

    python proc_graph.py start   --db DB --thread T --effects FILE
    python proc_graph.py approve --db DB --id RID --effects FILE [--no-graph] [--go-at TS]
    python proc_graph.py resume  --db DB --thread T --effects FILE

``DB`` is a SQLite path or a PostgreSQL URL (with ``--schema``). The gated node
appends one line to ``FILE`` per run, so a test can count its side effects.
Each command prints one JSON line and exits.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from typing_extensions import TypedDict

from trellis import END, START, StateGraph
from trellis.errors import AlreadyDecidedError
from trellis.hitl import Approval, ReviewQueue


class State(TypedDict, total=False):
    user_id: str
    validated: bool
    deleted: bool
    confirmed: bool


def build(saver: Any, effects: str) -> Any:
    def delete(state: State) -> dict[str, Any]:
        with open(effects, "a") as f:
            f.write(f"{state['user_id']} pid={os.getpid()}\n")
        return {"deleted": True}

    b = StateGraph(State)
    b.add_node("validate", lambda s: {"validated": True})
    b.add_node("delete", delete, approval=Approval(risk="high", timeout=3600))
    b.add_node("confirm", lambda s: {"confirmed": True})
    b.add_edge(START, "validate")
    b.add_edge("validate", "delete")
    b.add_edge("delete", "confirm")
    b.add_edge("confirm", END)
    return b.compile(checkpointer=saver)


def open_saver(db: str, schema: str) -> Any:
    if db.startswith("postgresql://"):
        from trellis.persist.postgres import PostgresSaver

        return PostgresSaver.from_conn_string(db, schema=schema, pool_size=2)
    from trellis.persist.sqlite import SqliteSaver

    return SqliteSaver.from_path(db)


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["start", "approve", "resume"])
    p.add_argument("--db", required=True)
    p.add_argument("--schema", default="public")
    p.add_argument("--effects", required=True)
    p.add_argument("--thread")
    p.add_argument("--id")
    p.add_argument("--reviewer", default=f"pid-{os.getpid()}")
    p.add_argument("--no-graph", action="store_true")
    p.add_argument("--go-at", type=float)
    args = p.parse_args(argv)
    saver = open_saver(args.db, args.schema)
    app = build(saver, args.effects)
    config = {"configurable": {"thread_id": args.thread}}
    out: dict[str, Any]
    if args.command == "start":
        result = app.invoke({"user_id": args.thread}, config)
        out = {"request_id": result["__interrupt__"][0].id}
    elif args.command == "resume":
        out = {"output": app.invoke(None, config), "state": app.get_state(config).values}
    else:
        queue = ReviewQueue(saver) if args.no_graph else ReviewQueue(saver, graph=app)
        if args.go_at is not None:  # line the contenders up, so they really overlap
            time.sleep(max(0.0, args.go_at - time.time()))
        try:
            queue.approve(args.id, reviewer=args.reviewer)
            out = {"result": "won", "reviewer": args.reviewer}
        except AlreadyDecidedError as exc:
            out = {"result": "lost", "status": exc.status}
    print(json.dumps(out, default=str), flush=True)
    saver.close()


if __name__ == "__main__":
    main(sys.argv[1:])
