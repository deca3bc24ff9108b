"""The airline policy of tau-bench as a knowledge base, and labelled questions about it.

Source: `../shared/data/tau-bench-airline/trajectories-gpt-4o.json` (200 recorded GPT-4o
runs, MIT). Every run's system message is the same airline agent policy (Markdown, one
`#` title and six `##` sections); it is indexed as one document.

Queries and relevance labels (the method, stated so the numbers can be judged):

* A query is the first message the (simulated) customer wrote in a run: what a policy-Q&A
  agent would search with before it knows anything else (`queries()`). A second set,
  `queries(upto_action=True)`, joins every customer message up to the agent's first write
  action: the conversation a later search could use. Identical texts are kept once.
* Its relevant sections are the policy sections that govern the *write* actions of that
  run: the task's ground-truth actions (written by tau-bench's authors) together with the
  write actions the recorded agent actually called, mapped by the fixed table
  `SECTION_OF_TOOL` below (a booking is governed by "Book flight", a cancellation by
  "Cancel flight", a flight/cabin/bag/passenger change by "Modify flight", a certificate by
  "Refund", a hand-off by the preamble that says when to transfer).
* Read-only tools (look-ups, search, calculate) say nothing about which rule applied, so a
  run with no write action on either side has no label and is left out; `queries()` reports
  how many.

A chunk is relevant when its section is one of the query's sections; recall@k is the share
of a query's relevant sections that have at least one chunk among the top k, averaged over
queries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["DATA", "PREAMBLE", "SECTION_OF_TOOL", "Query", "load_policy", "queries", "section_of"]

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "tau-bench-airline" / "trajectories-gpt-4o.json"

PREAMBLE = "Airline Agent Policy"
"""The title section: general rules, including when to transfer to a human."""

SECTION_OF_TOOL = {
    "book_reservation": "Book flight",
    "cancel_reservation": "Cancel flight",
    "update_reservation_flights": "Modify flight",
    "update_reservation_baggages": "Modify flight",
    "update_reservation_passengers": "Modify flight",
    "send_certificate": "Refund",
    "transfer_to_human_agents": PREAMBLE,
}


@dataclass(frozen=True)
class Query:
    text: str
    sections: frozenset[str]
    task_id: int


@cache
def _runs(path: Path = DATA) -> list[dict[str, Any]]:
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: the tau-bench airline data lives in ../shared/data"
        )
    runs: list[dict[str, Any]] = json.loads(path.read_text())
    return runs


def load_policy(path: Path = DATA) -> str:
    """The policy text (the system message every recorded run shares)."""
    texts = {run["traj"][0]["content"] for run in _runs(path)}
    if len(texts) != 1:
        raise ValueError(f"expected one policy text, found {len(texts)}")
    return texts.pop()


def section_of(heading: str) -> str:
    """The policy section of a chunk heading (`Airline Agent Policy > Refund` -> `Refund`)."""
    return heading.split(" > ")[-1]


def _write_sections(run: dict[str, Any]) -> set[str]:
    names = [a["name"] for a in run["info"]["task"]["actions"]]
    for message in run["traj"]:
        names += [c["function"]["name"] for c in message.get("tool_calls") or ()]
    return {SECTION_OF_TOOL[n] for n in names if n in SECTION_OF_TOOL}


def _customer_text(run: dict[str, Any], upto_action: bool) -> str:
    said: list[str] = []
    for m in run["traj"]:
        if m["role"] == "user":
            said.append(m["content"] or "")
            if not upto_action:
                break
        names = {c["function"]["name"] for c in m.get("tool_calls") or ()}
        if upto_action and names & SECTION_OF_TOOL.keys():
            break
    return " ".join(" ".join(said).split())


def queries(path: Path = DATA, *, upto_action: bool = False) -> tuple[list[Query], int]:
    """The labelled queries and how many runs were left out for having no label."""
    seen: dict[str, Query] = {}
    unlabelled = 0
    for run in _runs(path):
        sections = _write_sections(run)
        if not sections:
            unlabelled += 1
            continue
        text = _customer_text(run, upto_action)
        if text in seen:
            sections |= seen[text].sections
        seen[text] = Query(text, frozenset(sections), run["task_id"])
    return list(seen.values()), unlabelled
