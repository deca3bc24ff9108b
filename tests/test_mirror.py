"""tests/ mirrors src/ (STYLE.md): each module `threadline/a/b/name.py` has a test module
`test_name.py` in tests/a/b/, tests/a/ or tests/ (routers' tests sit in tests/server/).

The modules below have none of their own name yet; each entry says where its behaviour is
tested now. The list may only shrink: an entry whose module gained a mirror, or went away,
fails the test until it is removed.
"""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src" / "threadline"

NOT_MIRRORED: dict[str, str] = {
    # Named otherwise, because a test basename must be unique outside packages.
    "channels/registry.py": "tests/channels/test_channel_registry.py",
    "cli/channels.py": "tests/cli/test_channels_cli.py",
    "cli/triggers.py": "tests/cli/test_triggers_cli.py",
    "events/kinds.py": "tests/test_event_kinds.py",
    "events/summary.py": "tests/test_event_summary.py",
    "leases.py": "tests/test_lease_heartbeats.py (tests/stores/test_leases.py: the store's)",
    "resilience.py": "tests/test_backoff_breakers.py (tests/models/test_resilience.py: models')",
    "server/runner.py": "tests/server/test_runner_poison.py",
    "server/routers/metrics.py": "tests/observability/test_metrics.py",
    "stores/base.py": "tests/stores/test_contract.py (the contract every store keeps)",
    # Tested through the module that uses them (no test of their own yet).
    "channels/base.py": "tests/channels/test_slack.py, tests/channels/test_email.py",
    "channels/memory.py": "tests/channels/test_dispatch.py",
    "context/prepared.py": "tests/context/test_renderer.py (Renderer.prepare)",
    "cli/index.py": "tests/retrieval/test_cli_index.py",
    "cli/mcp.py": "tests/integrations/test_mcp_server.py",
    "cli/models.py": "tests/evals/test_bfcl.py, tests/evals/test_when2call.py",
    "events/state.py": "tests/test_events.py (derived state)",
    "events/thread.py": "tests/test_events.py",
    "integrations/mcp/server.py": "tests/integrations/test_mcp_server.py",
    "models/local_child.py": "tests/models/test_local_process.py (the child process)",
    "retrieval/embeddings.py": "tests/retrieval/test_openai_embeddings.py",
    "retrieval/sqlite.py": "tests/retrieval/test_embedded.py",
    "server/routers/health.py": "tests/server/test_auth.py, tests/server/test_offload.py",
}


def _unmirrored() -> set[str]:
    have = {p.relative_to(TESTS).as_posix() for p in TESTS.rglob("test_*.py")}
    missing = set()
    for path in SRC.rglob("*.py"):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        rel = path.relative_to(SRC)
        dirs = rel.parent.parts
        places = ["/".join([*dirs[:k], f"test_{path.stem}.py"]) for k in range(len(dirs) + 1)]
        if not any(place in have for place in places):
            missing.add(rel.as_posix())
    return missing


def test_every_module_has_a_test_module_of_its_name_or_a_reason() -> None:
    missing = _unmirrored()
    assert missing - set(NOT_MIRRORED) == set(), "add tests/.../test_<name>.py for these"
    assert set(NOT_MIRRORED) - missing == set(), "mirrored (or gone) now: drop from the list"


def test_the_reasons_point_at_tests_that_exist() -> None:
    for module, where in NOT_MIRRORED.items():
        first = where.split(" ")[0].rstrip(",")
        if first.startswith("tests/"):
            assert (TESTS.parent / first).exists(), f"{module}: {first} does not exist"
