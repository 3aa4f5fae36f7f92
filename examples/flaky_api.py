"""A seven-step order workflow whose third step calls an unreliable external API.

The notebook's interview question: *"Your workflow fails 5% of the time at step
3 (of 7) due to external API timeouts. Users have to restart from the
beginning. Design a robust recovery system."* In Trellis the answer is a few
``add_node`` options, not a framework of its own:

- Every step is checkpointed, so a failure (or a crash) resumes at step 3 with
  ``invoke(None, config)``; steps 1 and 2 do not run again.
- Step 3, ``book_shipment``, has ``retry_policy=RetryPolicy(max_attempts=3,
  retry_on=ShippingAPIError)``: at a 5% failure rate, three attempts all fail
  0.0125% of the time. Its request carries the task's idempotency key
  (``runtime.execution_info.task_id``, the same on every retry and resume), so
  the API can drop duplicates.
- If all three fail, ``on_error="human_review"`` records the failure in the
  state's ``errors`` list and hands the order to a person instead of raising.
- Steps 1 and 2 (reserve stock, charge the card) have ``compensate=``: the
  person (or code) calls ``graph.compensate(config)`` to refund the charge and
  release the stock, newest first, each exactly once even if called again.
- The charge itself is wrapped in ``once()``: retries and resumes of step 2
  reuse the recorded charge instead of charging the card again.

>>> from trellis import MemorySaver
>>> shop = Shop(ShippingAPI(fails=lambda call: True))  # the shipping API is down
>>> app = build(shop).compile(checkpointer=MemorySaver())
>>> config = {"configurable": {"thread_id": "order-7"}}
>>> app.invoke({"order_id": "order-7", "amount_cents": 4200}, config)["status"]
'needs_human_review'
>>> app.compensate(config).compensated
['charge_card', 'reserve_stock']
>>> shop.ledger[-2:]
['refund ch-1 4200', 'release res-1']

Run this file to see both outcomes: ``python examples/flaky_api.py``.
"""

from __future__ import annotations

import operator
import random
import threading
from collections.abc import Callable
from typing import Annotated, Any, Literal, NotRequired, TypedDict

from trellis import END, START, RetryPolicy, Runtime, StateGraph, once

__all__ = [
    "FAILURE_RATE",
    "MAX_ATTEMPTS",
    "STEPS",
    "OrderInput",
    "OrderState",
    "ShippingAPI",
    "ShippingAPIError",
    "Shop",
    "build",
    "graph",
]

FAILURE_RATE = 0.05
"""How often the shipping API times out, as in the notebook."""

MAX_ATTEMPTS = 3

STEPS = (
    "reserve_stock",
    "charge_card",
    "book_shipment",
    "create_invoice",
    "send_confirmation",
    "update_crm",
    "close_order",
)


class ShippingAPIError(Exception):
    """The shipping API timed out (transient: worth retrying)."""


class OrderInput(TypedDict):
    order_id: str
    amount_cents: int
    item: NotRequired[str]


class OrderState(TypedDict, total=False):
    order_id: str
    amount_cents: int
    item: str
    reservation_id: str
    charge_id: str
    tracking_number: str
    invoice_id: str
    status: Literal["completed", "needs_human_review"]
    steps: Annotated[list[str], operator.add]
    errors: Annotated[list[dict[str, Any]], operator.add]


class ShippingAPI:
    """A stand-in for the external API: fails ``failure_rate`` of the calls.

    ``fails(call_number)`` overrides the coin (call numbers start at 1), so a
    test can script an outage; ``seed`` makes the coin repeatable.
    """

    def __init__(
        self,
        failure_rate: float = FAILURE_RATE,
        *,
        seed: int | None = 7,
        fails: Callable[[int], bool] | None = None,
    ) -> None:
        self._coin = random.Random(seed)
        self._fails = fails or (lambda _call: self._coin.random() < failure_rate)
        self._lock = threading.Lock()
        self.calls: list[tuple[str, str]] = []  # (order id, idempotency key)
        self.booked: dict[str, str] = {}  # idempotency key -> tracking number

    def book(self, order_id: str, *, idempotency_key: str) -> str:
        with self._lock:
            self.calls.append((order_id, idempotency_key))
            if self._fails(len(self.calls)):
                raise ShippingAPIError(f"shipping API timed out (call {len(self.calls)})")
            # A repeated key gets the first booking back: no second parcel.
            return self.booked.setdefault(idempotency_key, f"trk-{len(self.booked) + 1}")


class Shop:
    """Inventory and payments, with a ledger of every side effect in order."""

    def __init__(self, shipping: ShippingAPI | None = None) -> None:
        self.shipping = shipping if shipping is not None else ShippingAPI()
        self.ledger: list[str] = []
        self._lock = threading.Lock()
        self._ids = {"res": 0, "ch": 0, "inv": 0}

    def _log(self, entry: str) -> None:
        with self._lock:
            self.ledger.append(entry)

    def _next(self, kind: str) -> str:
        with self._lock:
            self._ids[kind] += 1
            return f"{kind}-{self._ids[kind]}"

    def reserve(self, item: str) -> str:
        reservation = self._next("res")
        self._log(f"reserve {reservation} {item}")
        return reservation

    def release(self, reservation: str) -> None:
        self._log(f"release {reservation}")

    def charge(self, order_id: str, amount_cents: int) -> str:
        charge = self._next("ch")
        self._log(f"charge {charge} {amount_cents}")
        return charge

    def refund(self, charge: str, amount_cents: int) -> None:
        self._log(f"refund {charge} {amount_cents}")

    def invoice(self, order_id: str) -> str:
        return self._next("inv")

    def notify(self, order_id: str, text: str) -> None:
        self._log(f"notify {order_id}: {text}")


def build(shop: Shop | None = None, *, retry_interval: float = 0.5) -> StateGraph[OrderState, None]:
    """The order workflow over ``shop`` (a fresh demo shop by default).

    ``retry_interval``: seconds before the first retry of step 3 (doubling after).
    """
    s = shop if shop is not None else Shop()

    def reserve_stock(state: OrderState) -> dict[str, Any]:
        reservation = s.reserve(state.get("item", "widget"))
        return {"reservation_id": reservation, "steps": ["reserve_stock"]}

    def release_stock(state: OrderState) -> None:
        s.release(state["reservation_id"])

    def charge_card(state: OrderState) -> dict[str, Any]:
        charge = once("charge", s.charge, state["order_id"], state["amount_cents"])
        return {"charge_id": charge, "steps": ["charge_card"]}

    def refund_card(state: OrderState) -> None:
        s.refund(state["charge_id"], state["amount_cents"])

    def book_shipment(state: OrderState, runtime: Runtime[None]) -> dict[str, Any]:
        assert runtime.execution_info is not None
        key = runtime.execution_info.task_id  # the same on every retry and resume
        tracking = s.shipping.book(state["order_id"], idempotency_key=key)
        return {"tracking_number": tracking, "steps": ["book_shipment"]}

    def create_invoice(state: OrderState) -> dict[str, Any]:
        return {"invoice_id": s.invoice(state["order_id"]), "steps": ["create_invoice"]}

    def send_confirmation(state: OrderState) -> dict[str, Any]:
        s.notify(state["order_id"], f"shipped as {state['tracking_number']}")
        return {"steps": ["send_confirmation"]}

    def update_crm(state: OrderState) -> dict[str, Any]:
        return {"steps": ["update_crm"]}

    def close_order(state: OrderState) -> dict[str, Any]:
        return {"status": "completed", "steps": ["close_order"]}

    def human_review(state: OrderState) -> dict[str, Any]:
        s.notify(state["order_id"], "delayed: a person is looking at your order")
        return {"status": "needs_human_review", "steps": ["human_review"]}

    retry = RetryPolicy(
        max_attempts=MAX_ATTEMPTS, initial_interval=retry_interval, retry_on=ShippingAPIError
    )
    builder: StateGraph[OrderState, None] = StateGraph(OrderState, input_schema=OrderInput)
    builder.add_node("reserve_stock", reserve_stock, compensate=release_stock)
    builder.add_node("charge_card", charge_card, compensate=refund_card)
    builder.add_node("book_shipment", book_shipment, retry_policy=retry, on_error="human_review")
    builder.add_node("create_invoice", create_invoice)
    builder.add_node("send_confirmation", send_confirmation)
    builder.add_node("update_crm", update_crm)
    builder.add_node("close_order", close_order)
    builder.add_node("human_review", human_review)
    builder.add_edge(START, STEPS[0])
    for a, b in zip(STEPS, STEPS[1:], strict=False):
        builder.add_edge(a, b)
    builder.add_edge(STEPS[-1], END)
    builder.add_edge("human_review", END)
    return builder


graph = build().compile()
"""Compiled without a checkpointer: ``trellis run`` adds one; ``compensate`` needs one."""


def main() -> None:
    from trellis import MemorySaver

    shop = Shop(ShippingAPI(seed=11))
    app = build(shop, retry_interval=0.01).compile(checkpointer=MemorySaver())
    outcomes: dict[str, int] = {}
    for n in range(1, 201):
        order = f"order-{n}"
        out = app.invoke({"order_id": order, "amount_cents": 100 * n}, _config(order))
        outcomes[out["status"]] = outcomes.get(out["status"], 0) + 1
    failures = len(shop.shipping.calls) - 200
    print(f"200 orders at a {FAILURE_RATE:.0%} API failure rate: {failures} failed calls, "
          f"all retried; outcomes {outcomes}")  # fmt: skip

    down = Shop(ShippingAPI(fails=lambda _call: True))
    app = build(down, retry_interval=0.01).compile(checkpointer=MemorySaver())
    config = _config("order-outage")
    out = app.invoke({"order_id": "order-outage", "amount_cents": 4200}, config)
    error = out["errors"][0]
    print(f"outage: {out['status']} after {error['attempts']} attempts ({error['message']})")
    report = app.compensate(config)
    print(f"rolled back {report.compensated}; ledger: {down.ledger}")


def _config(order: str) -> Any:
    return {"configurable": {"thread_id": order}}


if __name__ == "__main__":
    main()
