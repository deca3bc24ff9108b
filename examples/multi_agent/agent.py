"""Multi-agent support: a coordinator with two focused sub-agents (factor 10).

    support  (coordinator)  reads the request, hands each part to a specialist
    ├─ billing              finds invoices; a refund needs a person's approval
    └─ shipping             tracks parcels (read-only)

Each specialist is a small agent with a few tools and its own instructions; the
coordinator sees each of them as one tool (`Agent.as_tool`) taking a `task`. A request
with a billing part and a shipping part becomes one answer with two calls: both child
threads start at once, the coordinator waits (holding no process), and when a refund
waits for approval it shows in the inbox with the coordinator above it. Approving it
resumes billing, then the coordinator. See docs/composition.md.

Run it against a model (`THREADLINE_MODEL`) with

    threadline run examples/multi_agent/agent.py:agent "Where is parcel P-100? And refund INV-7."
"""

from threadline import Agent, ToolContext, tool

INVOICES = {
    "INV-7": {"customer": "ana", "amount": 40, "status": "paid"},
    "INV-8": {"customer": "bo", "amount": 15, "status": "open"},
}
PARCELS = {"P-100": "in transit, arrives tomorrow", "P-200": "delivered"}
REFUNDS: list[dict[str, object]] = []


@tool
def find_invoice(invoice: str) -> dict[str, object]:
    """Look up an invoice by its number (e.g. INV-7)."""
    if invoice not in INVOICES:
        raise ValueError(f"no invoice {invoice}; known: {', '.join(INVOICES)}")
    return {"invoice": invoice, **INVOICES[invoice]}


@tool(side_effects=True, idempotent=True, approval="always")
def refund(invoice: str, amount: int, ctx: ToolContext) -> str:
    """Refund (part of) a paid invoice. A person approves every refund."""
    if not any(r["key"] == ctx.idempotency_key for r in REFUNDS):
        REFUNDS.append({"invoice": invoice, "amount": amount, "key": ctx.idempotency_key})
    return f"refunded {amount} on {invoice}"


@tool
def track_parcel(parcel: str) -> str:
    """Where a parcel is (e.g. P-100)."""
    return PARCELS.get(parcel, f"no parcel {parcel}")


billing = Agent(
    "billing",
    tools=[find_invoice, refund],
    instructions=(
        "You are the billing specialist. Look the invoice up before refunding it; refund "
        "only paid invoices. Report what you did with done_for_now."
    ),
)

shipping = Agent(
    "shipping",
    tools=[track_parcel],
    instructions="You are the shipping specialist. Track parcels; report with done_for_now.",
)

agent = Agent(
    "support",
    tools=[
        billing.as_tool(description="Invoices and refunds: give the invoice number and the ask."),
        shipping.as_tool(description="Parcel tracking: give the parcel number."),
    ],
    instructions=(
        "You are the support coordinator. Hand each part of the request to the right "
        "specialist (billing, shipping), both at once when there are two; then answer the "
        "customer with done_for_now."
    ),
)
