"""examples/multi_agent: a coordinator and two sub-agents; a refund approval deep in the tree."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from threadline import Runtime, SQLiteStore, Status, replay_thread
from threadline.composition import children
from threadline.models.base import Context
from threadline.testing import FunctionModel, intent
from threadline.wire import thread_out


def _answer(context: Context) -> object:
    """One scripted model for the three agents, told apart by their instructions."""
    text = context.as_text()
    if "billing specialist" in text:
        if "<refund_result" in text:
            return intent("done_for_now", message="refunded 40 on INV-7")
        if "<find_invoice_result" in text:
            return intent("refund", invoice="INV-7", amount=40)
        return intent("find_invoice", invoice="INV-7")
    if "shipping specialist" in text:
        if "<track_parcel_result" in text:
            return intent("done_for_now", message="P-100 arrives tomorrow")
        return intent("track_parcel", parcel="P-100")
    if "<billing_result" in text and "<shipping_result" in text:
        return intent("done_for_now", message="Your refund is done and P-100 arrives tomorrow.")
    return [
        intent("billing", task="Refund invoice INV-7 in full."),
        intent("shipping", task="Where is parcel P-100?"),
    ]


async def test_the_coordinator_splits_the_request_and_waits_for_the_refund_approval(
    multi_agent: ModuleType, tmp_path: Path
) -> None:
    async with SQLiteStore(tmp_path / "t.db") as store:
        rt = Runtime(store, model=FunctionModel(_answer), agents=[multi_agent.agent])
        root = await rt.launch("support", "Where is parcel P-100? And refund INV-7.")
        assert root.status == Status.WAITING
        # The two calls run at once: which child_started lands first is the scheduler's
        # (a loaded machine started shipping first once), so the children go by agent.
        started = {t.agent: t for t in [await store.load(i) for i in children(root)]}
        assert sorted(started) == ["billing", "shipping"]
        billing, shipping = started["billing"], started["shipping"]
        billing_id, shipping_id = billing.id, shipping.id
        assert shipping.status == Status.DONE  # ran while billing waits for a person
        assert billing.status == Status.AWAITING_APPROVAL
        assert multi_agent.REFUNDS == []
        inbox = (await store.list(status=Status.AWAITING_APPROVAL)).items
        assert [t.id for t in inbox] == [billing_id]
        assert [a.agent for a in thread_out(billing).ancestors] == ["support"]

        (call,) = billing.state.pending
        await rt.approve(billing_id, call, by="ana")
        await rt.advance(billing_id)
        root = await store.load(root.id)
        assert root.status == Status.DONE
        assert root.events[-1].message == "Your refund is done and P-100 arrives tomorrow."
        assert [(r["invoice"], r["amount"]) for r in multi_agent.REFUNDS] == [("INV-7", 40)]
        for thread_id in (root.id, billing_id, shipping_id):
            thread = await store.load(thread_id)
            replay_thread(rt.agent(thread.agent), thread)
