"""examples/flaky_api.py: retries absorb a flaky step 3; an outage goes to a person and
the earlier steps are compensated, newest first, exactly once."""

from __future__ import annotations

import importlib
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trellis import MemorySaver
from trellis.persist.sqlite import SqliteSaver

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
flaky_api = importlib.import_module("examples.flaky_api")

ORDER = {"order_id": "order-1", "amount_cents": 4200}


def config() -> dict[str, Any]:
    return {"configurable": {"thread_id": f"order-{uuid.uuid4().hex}"}}


def shop_failing(*calls: int) -> Any:
    """A shop whose shipping API fails exactly on these call numbers."""
    return flaky_api.Shop(flaky_api.ShippingAPI(fails=lambda call: call in calls))


def app(shop: Any, checkpointer: Any = None) -> Any:
    return flaky_api.build(shop, retry_interval=0.0).compile(checkpointer=checkpointer)


def test_a_healthy_api_runs_all_seven_steps() -> None:
    shop = shop_failing()
    out = app(shop).invoke(ORDER)
    assert out["steps"] == list(flaky_api.STEPS)
    assert out["status"] == "completed" and out["tracking_number"] == "trk-1"
    assert "errors" not in out or out["errors"] == []
    assert shop.ledger == [
        "reserve res-1 widget",
        "charge ch-1 4200",
        "notify order-1: shipped as trk-1",
    ]


def test_transient_failures_are_retried_with_one_idempotency_key_and_one_charge() -> None:
    shop = shop_failing(1, 2)
    out = app(shop, MemorySaver()).invoke(ORDER, config())
    assert out["status"] == "completed"
    assert out["steps"] == list(flaky_api.STEPS), "steps 1-2 ran once, not once per retry"
    assert len(shop.shipping.calls) == 3
    assert len({key for _, key in shop.shipping.calls}) == 1, "one idempotency key"
    assert [e for e in shop.ledger if e.startswith("charge")] == ["charge ch-1 4200"]


@settings(max_examples=25, deadline=None)
@given(outcomes=st.lists(st.booleans(), min_size=flaky_api.MAX_ATTEMPTS, max_size=6))
def test_an_order_completes_iff_one_of_three_attempts_succeeds(outcomes: list[bool]) -> None:
    """``outcomes[i]`` is whether API call i+1 fails."""
    shop = flaky_api.Shop(flaky_api.ShippingAPI(fails=lambda call: outcomes[call - 1]))
    out = app(shop).invoke(ORDER)
    first_three = outcomes[: flaky_api.MAX_ATTEMPTS]
    if all(first_three):
        assert out["status"] == "needs_human_review"
        assert len(shop.shipping.calls) == flaky_api.MAX_ATTEMPTS
    else:
        assert out["status"] == "completed"
        assert len(shop.shipping.calls) == first_three.index(False) + 1


def test_an_outage_goes_to_human_review_and_compensate_undoes_steps_1_and_2(
    tmp_path: Path,
) -> None:
    shop = shop_failing(*range(1, 100))
    saver = SqliteSaver.from_path(tmp_path / "orders.db")
    graph = app(shop, saver)
    cfg = config()
    out = graph.invoke(ORDER, cfg)
    assert out["status"] == "needs_human_review"
    assert out["steps"] == ["reserve_stock", "charge_card", "human_review"]
    [error] = out["errors"]
    assert error["node"] == "book_shipment"
    assert error["error_type"] == "ShippingAPIError"
    assert error["attempts"] == flaky_api.MAX_ATTEMPTS
    assert "tracking_number" not in out

    report = graph.compensate(cfg)
    assert report.compensated == ["charge_card", "reserve_stock"] and report.ok
    assert shop.ledger[-2:] == ["refund ch-1 4200", "release res-1"], "newest first"

    # A second call (say, by a retrying operator script, from a fresh process) is a no-op.
    with SqliteSaver.from_path(tmp_path / "orders.db") as fresh:
        again = app(shop, fresh).compensate(cfg)
    assert again.compensated == [] and again.failed == []
    assert [e.split()[0] for e in shop.ledger].count("refund") == 1
    assert [e.split()[0] for e in shop.ledger].count("release") == 1
    saver.close()


def test_a_run_stopped_during_step_3_resumes_at_step_3_not_step_1(tmp_path: Path) -> None:
    """The notebook's complaint: users restart from the beginning. Here the process is
    interrupted (Ctrl-C) inside the API call; a new graph object resumes the thread."""

    def ctrl_c_on_first_call(call: int) -> bool:
        if call == 1:
            raise KeyboardInterrupt
        return False

    shop = flaky_api.Shop(flaky_api.ShippingAPI(fails=ctrl_c_on_first_call))
    cfg = config()
    with (
        SqliteSaver.from_path(tmp_path / "orders.db") as saver,
        pytest.raises(KeyboardInterrupt),
    ):
        app(shop, saver).invoke(ORDER, cfg)
    with SqliteSaver.from_path(tmp_path / "orders.db") as saver:
        graph = app(shop, saver)
        assert graph.get_state(cfg).next == ("book_shipment",)
        out = graph.invoke(None, cfg)
    assert out["status"] == "completed"
    assert out["steps"] == list(flaky_api.STEPS)
    assert [e.split()[0] for e in shop.ledger].count("charge") == 1
    assert [e.split()[0] for e in shop.ledger].count("reserve") == 1


def test_at_the_notebooks_failure_rate_every_order_completes_after_retries() -> None:
    shop = flaky_api.Shop(flaky_api.ShippingAPI(flaky_api.FAILURE_RATE, seed=11))
    graph = app(shop)
    statuses = [
        graph.invoke({"order_id": f"o-{n}", "amount_cents": n})["status"] for n in range(200)
    ]
    failed_calls = len(shop.shipping.calls) - 200
    assert failed_calls > 0, "the API really was flaky"
    assert statuses == ["completed"] * 200


def test_the_module_graph_runs() -> None:
    out = flaky_api.graph.invoke(ORDER)
    assert out["status"] in ("completed", "needs_human_review")
    assert out["steps"][:2] == ["reserve_stock", "charge_card"]
