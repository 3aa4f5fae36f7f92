"""draw_mermaid_png(): the picture fetched from a mermaid.ink service (here a local one)."""

from __future__ import annotations

import base64
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypedDict

import pytest

from trellis import START, StateGraph

PNG = b"\x89PNG\r\n\x1a\n-a-picture-"


class S(TypedDict, total=False):
    n: int


def _graph() -> Any:
    g = StateGraph(S)
    g.add_node("fetch", lambda s: {})
    g.add_edge(START, "fetch")
    return g.compile()


class Service:
    """A stand-in for mermaid.ink on localhost: answers each request with the next
    status of ``statuses`` (then 200 with PNG bytes) and records what was asked."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.requests: list[str] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                service.requests.append(self.path)
                status = service.statuses.pop(0) if service.statuses else 200
                self.send_response(status)
                self.end_headers()
                if status == 200:
                    self.wfile.write(PNG)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def service() -> Iterator[Service]:
    s = Service()
    thread = threading.Thread(target=s.server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield s
    s.server.shutdown()
    s.server.server_close()


def test_the_png_is_the_services_picture_of_the_mermaid_text(
    service: Service, tmp_path: Path
) -> None:
    drawn = _graph().get_graph()
    out = tmp_path / "graph.png"
    assert drawn.draw_mermaid_png(base_url=service.url, output_file_path=out) == PNG
    assert out.read_bytes() == PNG
    (path,) = service.requests
    url = urllib.parse.urlsplit(path)
    assert base64.b64decode(url.path.removeprefix("/img/")).decode() == drawn.draw_mermaid()
    assert urllib.parse.parse_qs(url.query) == {"type": ["png"], "bgColor": ["!white"]}


def test_a_hex_background_is_sent_as_is(service: Service) -> None:
    _graph().get_graph().draw_mermaid_png(base_url=service.url, background_color="#fff")
    assert service.requests[0].endswith("bgColor=%23fff")


def test_a_server_error_is_retried(service: Service) -> None:
    service.statuses = [503]
    png = _graph().get_graph().draw_mermaid_png(base_url=service.url, retry_delay=0.01)
    assert png == PNG
    assert len(service.requests) == 2


def test_a_refusal_is_not_retried_and_names_the_service(service: Service) -> None:
    service.statuses = [400, 400]
    with pytest.raises(ValueError, match=rf"{service.url} could not render .*HTTP 400"):
        _graph().get_graph().draw_mermaid_png(base_url=service.url, retry_delay=0.01)
    assert len(service.requests) == 1


def test_an_unreachable_service_says_so_after_its_retries(service: Service) -> None:
    url = service.url
    service.server.shutdown()
    service.server.server_close()  # nothing listens there now
    with pytest.raises(ValueError, match=rf"cannot reach {url} .* after 3 attempt"):
        _graph().get_graph().draw_mermaid_png(base_url=url, max_retries=2, retry_delay=0.01)


def test_a_negative_retry_count_is_refused(service: Service) -> None:
    with pytest.raises(ValueError, match=r"max_retries=...\) must be >= 0, got -1"):
        _graph().get_graph().draw_mermaid_png(base_url=service.url, max_retries=-1)
    assert service.requests == []
