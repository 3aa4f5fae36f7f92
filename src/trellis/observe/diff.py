"""What changed in a thread's state between two checkpoints.

Nested mappings are compared key by key under dotted paths (``report.score``);
a list that only grew at its end is reported as the items appended, which is the
common case for message lists and other append-only channels.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Change", "diff_states", "render_diff"]

ChangeKind = Literal["added", "removed", "changed", "appended"]


@dataclass(frozen=True, slots=True)
class Change:
    """One difference: ``old`` is ``None`` for added keys, ``new`` for removed ones;
    for ``appended`` lists ``new`` holds only the appended items.
    """

    kind: ChangeKind
    path: str
    old: Any = None
    new: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "old": self.old, "new": self.new}


def _join(prefix: str | None, key: object) -> str:
    name = key if isinstance(key, str) else repr(key)
    return name if prefix is None else f"{prefix}.{name}"


def _is_list(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray))


def _equal(a: Any, b: Any) -> bool:
    """Equal and of the same types, all the way down: ``0 -> False`` and
    ``1 -> 1.0`` are changes a reader of the state wants to see."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(_equal, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(v, b[k]) for k, v in a.items())
    try:
        return bool(a == b)
    except Exception:  # e.g. numpy arrays: ambiguous truth value
        return a is b


def _diff(a: Any, b: Any, path: str | None, out: list[Change]) -> None:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in a:
            if key not in b:
                out.append(Change("removed", _join(path, key), old=a[key]))
        for key in b:
            if key not in a:
                out.append(Change("added", _join(path, key), new=b[key]))
            else:
                _diff(a[key], b[key], _join(path, key), out)
        return
    if _equal(a, b):
        return
    if (
        _is_list(a)
        and _is_list(b)
        and type(a) is type(b)
        and len(b) > len(a)
        and _equal(list(b[: len(a)]), list(a))
    ):
        out.append(Change("appended", path or "", old=len(a), new=list(b[len(a) :])))
        return
    out.append(Change("changed", path or "", old=a, new=b))


def diff_states(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[Change]:
    """The changes that turn state ``a`` into state ``b``.

    >>> diff_states({"n": 1, "log": ["a"]}, {"n": 2, "log": ["a", "b"], "done": True})
    [Change(kind='changed', path='n', old=1, new=2), Change(kind='appended', path='log', \
old=1, new=['b']), Change(kind='added', path='done', old=None, new=True)]

    For ``appended``, ``old`` is the length before and ``new`` the items added.
    """
    out: list[Change] = []
    _diff(a, b, None, out)
    return out


def render_diff(changes: Sequence[Change], *, width: int = 80) -> str:
    """Readable text, one change per line: ``+`` added, ``-`` removed, ``~`` changed.

    >>> print(render_diff(diff_states({"n": 1}, {"n": 2, "m": "x"})), end="")
    ~ n: 1 → 2
    + m: 'x'
    """
    short = reprlib.Repr()
    short.maxstring = short.maxother = max(width, 20)
    short.maxlist = short.maxdict = short.maxtuple = 6
    if not changes:
        return "(no changes)\n"
    lines: list[str] = []
    for c in changes:
        if c.kind == "added":
            lines.append(f"+ {c.path}: {short.repr(c.new)}")
        elif c.kind == "removed":
            lines.append(f"- {c.path}: {short.repr(c.old)}")
        elif c.kind == "appended":
            items = c.new if isinstance(c.new, list) else [c.new]
            noun = "item" if len(items) == 1 else "items"
            lines.append(f"+ {c.path}: +{len(items)} {noun}")
            lines.extend(f"    + {short.repr(item)}" for item in items)
        else:
            lines.append(f"~ {c.path}: {short.repr(c.old)} → {short.repr(c.new)}")
    return "\n".join(lines) + "\n"
