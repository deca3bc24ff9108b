"""Retrieval fixtures: one real local embedder per session (loading ONNX takes a second)."""

from __future__ import annotations

import pytest

from threadline.retrieval import LocalEmbedder


@pytest.fixture(scope="session")
def embedder() -> LocalEmbedder:
    return LocalEmbedder()
