"""Rendering Mermaid text to PNG with the mermaid.ink service, as LangGraph does.

A network call, kept out of :mod:`trellis.graph.drawing` (which is pure text) and
made with the standard library only.
"""

from __future__ import annotations

import base64
import random
import re
import time
import urllib.error
import urllib.parse
import urllib.request

__all__ = ["render_png"]

_HEX_COLOR = re.compile(r"^#(?:[0-9a-fA-F]{3}){1,2}$")


def image_url(mermaid: str, base_url: str, background_color: str | None) -> str:
    """The service's URL for ``mermaid`` as a PNG: the text base64-encoded in the
    path; a named background color is sent as ``!name``, a hex one as is.

    >>> image_url("graph TD;", "https://mermaid.ink", "white")
    'https://mermaid.ink/img/Z3JhcGggVEQ7?type=png&bgColor=%21white'
    """
    encoded = base64.b64encode(mermaid.encode("utf8")).decode("ascii")
    if background_color is not None and not _HEX_COLOR.match(background_color):
        background_color = f"!{background_color}"
    color = urllib.parse.quote(str(background_color), safe="")
    return f"{base_url.rstrip('/')}/img/{encoded}?type=png&bgColor={color}"


def render_png(
    mermaid: str,
    *,
    base_url: str,
    background_color: str | None,
    max_retries: int,
    retry_delay: float,
    timeout: float,
) -> bytes:
    """Fetch the PNG; raises ValueError naming the service and what went wrong."""
    if max_retries < 0:
        raise ValueError(f"draw_mermaid_png(max_retries=...) must be >= 0, got {max_retries}")
    url = image_url(mermaid, base_url, background_color)
    for attempt in range(max_retries + 1):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or attempt == max_retries:
                raise ValueError(
                    f"{base_url} could not render the graph: HTTP {exc.code} {exc.reason}"
                ) from exc
        except OSError as exc:  # URLError, a timeout, a reset connection
            if attempt == max_retries:
                reason = getattr(exc, "reason", exc)
                raise ValueError(
                    f"cannot reach {base_url} to render the graph after "
                    f"{max_retries + 1} attempt(s): {reason}; draw_mermaid() gives the "
                    "text to render elsewhere"
                ) from exc
        # Backoff with jitter, as LangGraph's renderer: the service is shared.
        time.sleep(retry_delay * 2**attempt * (0.5 + 0.5 * random.random()))
    raise AssertionError("unreachable")  # the loop runs at least once and returns or raises
