"""retrieval/base.py, the parts every backend shares: relevance in [0, 1], rank fusion,
metadata filters, query terms, and the upsert plan that re-embeds only what changed."""

from __future__ import annotations

import pytest

from threadline.errors import ConfigError
from threadline.retrieval.base import (
    RRF_K,
    Document,
    UpsertReport,
    check_filter,
    filter_matches,
    must_record_embedder,
    plan_document,
    query_terms,
    reciprocal_rank_fusion,
    relevance,
)


def test_relevance_is_in_zero_one_for_every_mode() -> None:
    first_in_both = 2 / (RRF_K + 1)
    assert relevance(first_in_both, "hybrid") == 1.0
    assert relevance(1 / (RRF_K + 1), "hybrid") == 0.5  # first in one ranking, absent in the other
    assert relevance(0.83, "vector") == 0.83 and relevance(-0.2, "vector") == 0.0
    assert relevance(3.0, "lexical") == 0.75 and relevance(0.0, "lexical") == 0.0


def test_fusion_scores_ids_over_rankings_and_keeps_ties_in_first_order() -> None:
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["b", "d"]], k=60)
    assert [key for key, _ in fused] == ["b", "a", "d", "c"]
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61)
    tie = reciprocal_rank_fusion([["x"], ["y"]])
    assert [key for key, _ in tie] == ["x", "y"]


def test_filters_match_equality_or_any_of_and_refuse_odd_keys() -> None:
    meta = {"lang": "en", "team": "billing"}
    assert filter_matches(meta, None) and filter_matches(meta, {"lang": "en"})
    assert filter_matches(meta, {"team": ["billing", "support"]})
    assert not filter_matches(meta, {"lang": "fr"}) and not filter_matches(meta, {"x": 1})
    check_filter({"product-line": "a", "team_2": "b"})
    with pytest.raises(ConfigError, match="must be letters, digits"):
        check_filter({"team') OR 1=1 --": "x"})


def test_query_terms_drop_stop_words_and_repeats() -> None:
    assert query_terms("What is the refund policy for the refund of shoes?") == [
        "refund",
        "policy",
        "shoes",
    ]


def test_an_upsert_plan_touches_only_what_changed() -> None:
    doc = Document(
        id="faq.md", title="FAQ", text="# Refunds\n\nWithin 30 days.\n\n# Shipping\n\nFree."
    )
    first = plan_document(doc, None, set())
    assert first is not None and first.new == first.chunks and first.stale == []
    stored = {c.id for c in first.chunks}
    assert plan_document(doc, first.hash, stored) is None  # unchanged: nothing to do
    edited = doc.model_copy(update={"text": doc.text.replace("Free.", "Free over $50.")})
    second = plan_document(edited, first.hash, stored)
    assert second is not None
    assert 0 < len(second.new) < len(second.chunks)  # the refunds chunk is kept as it was
    assert second.stale and set(second.stale) <= stored
    total = UpsertReport(documents=1, added_chunks=2).merge(
        UpsertReport(documents=1, kept_chunks=3)
    )
    assert (total.documents, total.added_chunks, total.kept_chunks) == (2, 2, 3)


def test_an_index_keeps_the_embeddings_it_was_built_with() -> None:
    def record(recorded: str | None, empty: bool) -> bool:
        return must_record_embedder(
            recorded, want="local", empty=empty, index="sqlite:///i.db", elsewhere="a new file"
        )

    assert record(None, empty=True) is True  # a new index takes them
    assert record("none", empty=True) is True  # an empty one changes them
    assert record("local", empty=False) is False  # already its own: nothing to record
    with pytest.raises(ConfigError, match="sqlite:///i.db was built with embeddings 'none'"):
        record("none", empty=False)
