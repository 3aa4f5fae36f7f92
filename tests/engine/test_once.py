"""``once()`` / ``aonce()``: a side effect runs at most once per task, across interrupts,
retries, failed runs and a SIGKILL of the process."""

from __future__ import annotations

import asyncio
import gc
import operator
import threading
import uuid
import warnings
from collections import Counter
from typing import Annotated, Any

import pytest
from typing_extensions import TypedDict

from trellis import END, START, Command, RetryPolicy, StateGraph, aonce, interrupt, once


class S(TypedDict, total=False):
    amount: int
    receipt: str
    answers: Annotated[list[Any], operator.add]


def config() -> dict[str, Any]:
    return {"configurable": {"thread_id": uuid.uuid4().hex}}


class Payments:
    """A payment provider that counts charges."""

    def __init__(self) -> None:
        self.charges: list[int] = []

    def charge(self, amount: int) -> str:
        self.charges.append(amount)
        return f"receipt-{len(self.charges)}"

    async def acharge(self, amount: int) -> str:
        return self.charge(amount)


def one_node(fn: Any, checkpointer: Any = None, **options: Any) -> Any:
    builder = StateGraph(S)
    builder.add_node("pay", fn, **options)
    builder.add_edge(START, "pay")
    builder.add_edge("pay", END)
    return builder.compile(checkpointer=checkpointer)


def test_two_interrupts_after_a_charge_resume_without_charging_again(saver_factory: Any) -> None:
    payments = Payments()
    runs: list[str] = []

    def pay(state: S) -> dict[str, Any]:
        receipt = once("charge", payments.charge, state["amount"])
        runs.append(receipt)
        first = interrupt({"receipt": receipt, "q": "ship?"})
        second = interrupt({"q": "gift wrap?"})
        return {"receipt": receipt, "answers": [first, second]}

    graph = one_node(pay, saver_factory.make())
    cfg = config()
    out = graph.invoke({"amount": 40}, cfg)
    assert out["__interrupt__"][0].value == {"receipt": "receipt-1", "q": "ship?"}
    out = graph.invoke(Command(resume="yes"), cfg)
    assert out["__interrupt__"][0].value == {"q": "gift wrap?"}
    out = graph.invoke(Command(resume="no"), cfg)
    assert out == {"amount": 40, "receipt": "receipt-1", "answers": ["yes", "no"]}
    assert payments.charges == [40]
    assert runs == ["receipt-1"] * 3, "the node body ran three times, the charge once"


def test_retries_do_not_charge_again(saver_factory: Any) -> None:
    payments = Payments()
    attempts: list[int] = []

    def pay(state: S, runtime: Any) -> dict[str, Any]:
        receipt = once("charge", payments.charge, state["amount"])
        attempts.append(runtime.execution_info.node_attempt)
        if len(attempts) < 3:
            raise ConnectionError("the shipping API timed out after the charge")
        return {"receipt": receipt}

    policy = RetryPolicy(max_attempts=3, initial_interval=0.001, jitter=False)
    graph = one_node(pay, saver_factory.make(), retry_policy=policy)
    assert graph.invoke({"amount": 5}, config())["receipt"] == "receipt-1"
    assert attempts == [1, 2, 3]
    assert payments.charges == [5]


def test_a_timed_out_charge_still_running_is_not_made_again_by_the_retry() -> None:
    """The README's charge pattern (timeout + retries): the first attempt is
    abandoned while the charge is still in flight; the retries wait for its
    receipt instead of charging again."""
    calls: list[int] = []
    release = threading.Event()

    def slow_charge(amount: int) -> str:
        calls.append(amount)
        release.wait(5)  # in flight across the first attempts' timeouts
        return f"receipt-{len(calls)}"

    def pay(state: S) -> dict[str, Any]:
        return {"receipt": once("charge", slow_charge, state["amount"])}

    policy = RetryPolicy(max_attempts=20, initial_interval=0.01, jitter=False)
    graph = one_node(pay, retry_policy=policy, timeout=0.05)
    threading.Timer(0.3, release.set).start()
    assert graph.invoke({"amount": 5})["receipt"] == "receipt-1"
    assert calls == [5]


async def test_a_timed_out_async_charge_still_running_is_not_made_again() -> None:
    """aonce's twin of the above: the timed-out attempt is cancelled, but the call
    it made (here a thread) goes on; the retries wait for it."""
    import asyncio

    calls: list[int] = []
    release = threading.Event()

    def slow_charge(amount: int) -> str:
        calls.append(amount)
        release.wait(5)
        return f"receipt-{len(calls)}"

    async def pay(state: S) -> dict[str, Any]:
        return {"receipt": await aonce("charge", asyncio.to_thread, slow_charge, state["amount"])}

    policy = RetryPolicy(max_attempts=20, initial_interval=0.01, jitter=False)
    graph = one_node(pay, retry_policy=policy, timeout=0.05)
    asyncio.get_running_loop().call_later(0.3, release.set)
    assert (await graph.ainvoke({"amount": 5}))["receipt"] == "receipt-1"
    assert calls == [5]


def test_once_called_again_from_inside_its_own_fn_is_a_named_error() -> None:
    def pay(state: S) -> dict[str, Any]:
        return {"receipt": once("charge", lambda: once("charge", lambda: "inner"))}

    with pytest.raises(RuntimeError, match="called again from inside its own fn"):
        one_node(pay).invoke({"amount": 1})


async def test_aonce_called_again_from_inside_its_own_fn_is_a_named_error() -> None:
    async def inner() -> str:
        return await aonce("charge", lambda: "inner")

    async def pay(state: S) -> dict[str, Any]:
        return {"receipt": await aonce("charge", inner)}

    with pytest.raises(RuntimeError, match=r"aonce\('charge'\) in node .* from inside its own fn"):
        await asyncio.wait_for(one_node(pay).ainvoke({"amount": 1}), 5)  # not a hang


def test_retries_do_not_charge_again_without_a_checkpointer() -> None:
    payments = Payments()
    calls: list[int] = []

    def pay(state: S) -> dict[str, Any]:
        receipt = once("charge", payments.charge, state["amount"])
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("flaky")
        return {"receipt": receipt}

    policy = RetryPolicy(max_attempts=2, initial_interval=0.001)
    assert one_node(pay, retry_policy=policy).invoke({"amount": 1})["receipt"] == "receipt-1"
    assert payments.charges == [1]


def test_a_failed_run_resumed_later_does_not_charge_again(saver_factory: Any) -> None:
    payments = Payments()
    broken = [True]

    def pay(state: S) -> dict[str, Any]:
        receipt = once("charge", payments.charge, state["amount"])
        if broken[0]:
            raise KeyError("address")  # not retried: the run fails
        return {"receipt": receipt}

    graph = one_node(pay, saver_factory.make())
    cfg = config()
    with pytest.raises(KeyError):
        graph.invoke({"amount": 9}, cfg)
    broken[0] = False
    assert graph.invoke(None, cfg)["receipt"] == "receipt-1"
    assert payments.charges == [9]


def test_keys_and_tasks_are_independent(saver_factory: Any) -> None:
    payments = Payments()

    def node(state: S) -> dict[str, Any]:
        first = once("a", payments.charge, 1)
        second = once("b", payments.charge, 2)
        return {"answers": [first, second, interrupt("ok?")]}

    builder = StateGraph(S)
    builder.add_node("x", node)
    builder.add_node("y", node)
    builder.add_edge(START, "x")
    builder.add_edge("x", "y")
    graph = builder.compile(checkpointer=saver_factory.make())
    cfg = config()
    graph.invoke({"amount": 0}, cfg)
    graph.invoke(Command(resume="x-ok"), cfg)  # x finishes; y charges its own two
    out = graph.invoke(Command(resume="y-ok"), cfg)
    assert payments.charges == [1, 2, 1, 2]
    assert out["answers"] == ["receipt-1", "receipt-2", "x-ok", "receipt-3", "receipt-4", "y-ok"]


def test_once_outside_a_node_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="inside a running node"):
        once("k", print)


async def test_aonce_in_an_async_graph_charges_once_across_resumes(saver_factory: Any) -> None:
    payments = Payments()
    bodies: list[int] = []

    async def pay(state: S) -> dict[str, Any]:
        receipt = await aonce("charge", payments.acharge, state["amount"])
        label = await aonce("label", lambda: f"label-{len(bodies)}")  # a sync fn works too
        bodies.append(1)
        answer = interrupt({"receipt": receipt})
        again = interrupt("sure?")
        return {"receipt": receipt, "answers": [label, answer, again]}

    graph = one_node(pay, saver_factory.make())
    cfg = config()
    await graph.ainvoke({"amount": 7}, cfg)
    await graph.ainvoke(Command(resume="ship"), cfg)
    out = await graph.ainvoke(Command(resume="yes"), cfg)
    assert out["receipt"] == "receipt-1"
    assert out["answers"] == ["label-0", "ship", "yes"]
    assert payments.charges == [7]
    assert len(bodies) == 3


def _once_with_an_async_function() -> tuple[str, list[str]]:
    """Call once() with an async function; the error and any RuntimeWarnings seen."""
    payments = Payments()

    def pay(state: S) -> dict[str, Any]:
        return {"receipt": once("charge", payments.acharge, 1)}

    message = ""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            one_node(pay).invoke({"amount": 1})
        except TypeError as exc:
            message = str(exc)
        gc.collect()  # an un-awaited coroutine warns when it is collected
    return message, [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


def test_once_with_an_async_function_asks_for_aonce() -> None:
    message, _ = _once_with_an_async_function()
    assert "aonce" in message


def test_once_with_an_async_function_leaves_no_unawaited_coroutine() -> None:
    _, runtime_warnings = _once_with_an_async_function()
    assert not [w for w in runtime_warnings if "never awaited" in w]


# -- SIGKILL after the charge, before the node finishes ------------------------------


@pytest.mark.slow
def test_a_charge_made_before_a_sigkill_is_not_made_again_by_the_new_process(
    crash: Any,
) -> None:
    crash.kill_at("once", "P")
    assert crash.count("charge") == 1
    first_pid = crash.events("charge")[0]["pid"]

    out = crash.run("once", "resume")
    assert out["ok"], out
    assert crash.count("charge") == 1
    assert out["result"]["receipt"] == f"receipt-{first_pid}", "the recorded result is reused"
    assert out["result"]["trail"] == ["A", "P", "Z"]
    ran = Counter(e["node"] for e in crash.events("node"))
    assert ran == {"A": 1, "P": 2, "Z": 1}


def test_a_charge_under_a_cancelled_ainvoke_is_not_made_again_on_resume(
    saver_factory: Any,
) -> None:
    """The caller gives up while aonce's call is in flight; the call finishes (it is
    shielded) and its result is saved, so resuming the thread does not charge again."""
    payments = Payments()
    landed = asyncio.Event()

    async def slow_charge(amount: int) -> str:
        await asyncio.sleep(0.2)
        receipt = payments.charge(amount)
        landed.set()
        return receipt

    async def pay(state: S) -> dict[str, Any]:
        return {"receipt": await aonce("charge", slow_charge, state["amount"])}

    graph = one_node(pay, saver_factory.make())
    cfg = config()

    async def main() -> dict[str, Any]:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(graph.ainvoke({"amount": 5}, cfg), 0.05)
        await landed.wait()
        thread = cfg["configurable"]["thread_id"]
        for _ in range(500):  # the save that follows the charge, in the background
            saved = await graph.checkpointer.aget_tuple(thread)
            if any(w.channel == "__once__" for w in saved.pending_writes):
                break
            await asyncio.sleep(0.01)
        return await graph.ainvoke(None, cfg)  # type: ignore[no-any-return]

    assert asyncio.run(main())["receipt"] == "receipt-1"
    assert payments.charges == [5]


def _charge_ship_confirm(charge: Any, calls: list[str]) -> Any:
    """A node that charges and ships once each (aonce), then asks for a confirmation."""

    async def ship() -> str:
        calls.append("ship")
        return "label"

    async def pay(state: S) -> dict[str, Any]:
        receipt = await aonce("charge", charge)
        label = await aonce("ship", ship)
        return {"receipt": f"{receipt} {label} {interrupt('confirm?')}"}

    return pay


def test_a_late_save_after_a_cancel_keeps_what_a_resumed_run_saved_meanwhile() -> None:
    """Resumed at once, the thread records charge and ship and asks; the cancelled run's
    charge lands after that and is saved beside them, never over them."""
    from trellis import MemorySaver

    calls: list[str] = []
    first_landed = asyncio.Event()

    async def charge() -> str:
        calls.append("charge")
        if calls.count("charge") == 1:
            await asyncio.sleep(0.3)  # the first call is slow; its caller gives up
            first_landed.set()
        return f"receipt-{calls.count('charge')}"

    pay = _charge_ship_confirm(charge, calls)
    graph = one_node(pay, MemorySaver())
    cfg = config()

    async def main() -> dict[str, Any]:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(graph.ainvoke({}, cfg), 0.05)
        assert "__interrupt__" in await graph.ainvoke(None, cfg)  # its own calls, then asks
        await first_landed.wait()
        await asyncio.sleep(0.1)  # the cancelled run's save, in the background
        return await graph.ainvoke(Command(resume="yes"), cfg)  # type: ignore[no-any-return]

    assert asyncio.run(main())["receipt"] == "receipt-2 label yes"
    assert calls.count("ship") == 1


def test_a_timed_out_attempts_late_save_keeps_what_its_retry_saved() -> None:
    """The retry (same task) waits for the call, then records more; the timed-out
    attempt's save, read before and written after that, keeps the retry's results."""
    from trellis import MemorySaver

    class SlowRead(MemorySaver):  # as a network round trip: the save's read yields
        async def aget_tuple(self, *args: Any, **kwargs: Any) -> Any:
            got = await super().aget_tuple(*args, **kwargs)
            await asyncio.sleep(0.1)
            return got

    calls: list[str] = []

    async def charge() -> str:
        calls.append("charge")
        await asyncio.sleep(0.3)  # longer than the node's timeout
        return "receipt"

    pay = _charge_ship_confirm(charge, calls)
    policy = RetryPolicy(max_attempts=3, initial_interval=0.001, jitter=False)
    graph = one_node(pay, SlowRead(), timeout=0.1, retry_policy=policy)
    cfg = config()

    async def main() -> dict[str, Any]:
        assert "__interrupt__" in await graph.ainvoke({}, cfg)
        await asyncio.sleep(0.4)  # the timed-out attempt's save lands
        return await graph.ainvoke(Command(resume="yes"), cfg)  # type: ignore[no-any-return]

    assert asyncio.run(main())["receipt"] == "receipt label yes"
    assert calls == ["charge", "ship"]
