"""Secrets are masked in what the model sees, in logs, and (unless allowed) in storage."""

from __future__ import annotations

import io
import json
import random
import re

import pytest

from threadline import Agent, ContextSettings, MemoryStore, Runtime, tool
from threadline.context.redaction import _NEEDLES, _SHORT, DEFAULT_PATTERNS, MASK, Redactor
from threadline.errors import ConfigError
from threadline.observability import JsonEventLog
from threadline.testing import ScriptedModel, intent

KEY = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4"


@tool
def read_config(service: str) -> dict:
    """Read a service's configuration."""
    return {
        "service": service,
        "api_key": KEY,
        "url": "postgres://app:hunter2secret@db:5432/x",
        "headers": {"Authorization": "Bearer abcdefghijklmnopqrstuvwxyz012345"},
    }


def _agent(**settings: object) -> Agent:
    context = ContextSettings(**settings)  # type: ignore[arg-type]
    return Agent("ops", tools=[read_config], instructions="Inspect configs.", context=context)


async def _run(agent: Agent) -> tuple[Runtime, ScriptedModel, io.StringIO, str]:
    log = io.StringIO()
    model = ScriptedModel(
        [intent("read_config", service="billing"), intent("done_for_now", message="done")]
    )
    rt = Runtime(
        MemoryStore(),
        agents=[agent],
        model=model,
        observers=[JsonEventLog(log, redact=Redactor().redact)],
    )
    thread = await rt.launch(agent, "check billing; my token is ghp_" + "x" * 36)
    return rt, model, log, thread.id


async def test_a_key_planted_in_a_tool_result_never_reaches_the_model_or_the_store() -> None:
    rt, model, log, thread_id = await _run(_agent())
    seen = model.contexts[1].messages[0].content
    assert KEY not in seen and "hunter2secret" not in seen
    assert "abcdefghijklmnopqrstuvwxyz012345" not in seen and "ghp_xxxx" not in seen
    assert f'api_key: "{MASK}"' in seen
    assert "postgres://app:[REDACTED]@db:5432/x" in seen  # the URL stays useful
    stored = await rt.store.load(thread_id)
    raw = json.dumps(stored.to_dict())
    assert KEY not in raw and "hunter2secret" not in raw and "ghp_xxxx" not in raw
    assert "service" in raw and "billing" in raw
    await rt.replay(thread_id)


async def test_an_agent_may_keep_originals_in_storage_but_the_model_still_sees_masks() -> None:
    rt, model, _, thread_id = await _run(_agent(store_secrets=True))
    stored = json.dumps((await rt.store.load(thread_id)).to_dict())
    assert KEY in stored
    assert KEY not in model.contexts[1].messages[0].content


def test_log_lines_are_masked() -> None:
    log = io.StringIO()
    JsonEventLog(log, redact=Redactor().redact)
    redactor = Redactor()
    line = json.dumps({"message": f"failed with key {KEY} and password=opensesame1"})
    out = redactor(line)
    assert KEY not in out and "opensesame1" not in out


def test_user_patterns_and_values() -> None:
    redactor = Redactor([r"ACCT-\d{6}", re.compile(r"pin (\d{4})")], values=["blue-falcon-42"])
    text = "acct ACCT-123456, pin 9876, codename blue-falcon-42, order 12345"
    assert redactor(text) == f"acct {MASK}, pin {MASK}, codename {MASK}, order 12345"
    assert redactor(redactor(text)) == redactor(text)
    agent = _agent(redact={"patterns": [r"ACCT-\d{6}"], "values": ["blue-falcon-42"]})
    assert agent.context.redactor(text).count(MASK) == 2  # type: ignore[misc]
    with pytest.raises(ConfigError, match="not a valid regex"):
        Redactor(["(unclosed"])


def test_literal_values_are_screened_like_the_default_patterns() -> None:
    """Without patterns of the user's own every pattern has needles, so text holding none
    of them is returned as it is; a literal value is one of those needles."""
    redactor = Redactor(values=["blue-falcon-42"])
    assert redactor("codename blue-falcon-42") == f"codename {MASK}"
    assert redactor("codename BLUE-FALCON-42") == "codename BLUE-FALCON-42"
    assert redactor(f"key {KEY} and blue-falcon-42") == f"key {MASK} and {MASK}"
    assert redactor("plain text") == "plain text"


def test_plain_text_is_left_alone() -> None:
    text = "Book flight HAT069 for mia_li_3668, reservation ZFA04Y, card ending 7447."
    assert Redactor()(text) == text


async def test_redaction_can_be_switched_off() -> None:
    rt, model, _, _ = await _run(_agent(redact=False, store_secrets=True))
    assert KEY in model.contexts[1].messages[0].content


def _redacts_within(text: str, seconds: float = 120.0) -> str:
    """`Redactor().redact(text)`, run in a thread: a backtracking pattern takes hours on a
    megabyte (quadratic), a linear one well under the generous bound."""
    import threading

    out: list[str] = []
    worker = threading.Thread(target=lambda: out.append(Redactor().redact(text)), daemon=True)
    worker.start()
    worker.join(seconds)
    if not out:
        pytest.fail(f"redaction of {len(text):,} characters ({text[:20]!r}...) did not finish")
    return out[0]


@pytest.mark.parametrize(
    "text",
    [
        "x" * 1_000_000,
        "a." * 500_000,  # every position could start a URL scheme
        "eyJ-" * 250_000,  # every position could start a JWT
        "ab://" + "c" * 1_000_000,
        "token " + " " * 1_000_000,
        "sk-" * 333_333,
        ("a://b:c" + "d" * 100) * 9_000,
    ],
    ids=["letters", "scheme-chars", "jwt-starts", "no-password", "spaces", "key-starts", "urls"],
)
def test_redaction_is_linear_on_megabyte_inputs(text: str) -> None:
    redacted = _redacts_within(text)
    assert redacted == Redactor().redact(redacted)  # idempotent on the hostile input too


def test_linear_patterns_still_mask_what_they_did() -> None:
    r = Redactor()
    assert r.redact("see https://bob:hunter22@example.com/x") == (
        f"see https://bob:{MASK}@example.com/x"
    )
    assert r.redact("db=postgres+psycopg://u:pw@h") == f"db=postgres+psycopg://u:{MASK}@h"
    jwt = "eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.SflKxwRJSMeKKF2QT4"
    assert r.redact(f"jwt {jwt} end") == f"jwt {MASK} end"


_PIECES = [
    "sk-ant-" + "a" * 20,
    KEY,
    "ghp_" + "b" * 32,
    "github_pat_" + "c" * 32,
    "xoxb-1234567890ab",
    "AKIA" + "ABCDEFGHIJKLMNOP",
    "AIza" + "d" * 35,
    "sk_live_" + "e" * 20,
    "eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.SflKxwRJSMeKKF2QT4",
    "https://bob:hunter22@example.com",
    "Bearer " + "f" * 20,
    "BASIC " + "g" * 20,
    "Password: hunter22",
    "API-KEY=abcd1234",
    "Auth_Token = 'zzzz9999'",
    "client-secret:s3cr3t!",
    "sk-",
    "://",
    "eyJ",
    "token",
    "x",
    " ",
    "=",
    "\u00e9",
    "\u2026 [truncated: full result in event 7]",
    "AP\u0130_KEY=abcd1234",  # a dotted capital I: matched as i, lowered to two letters
    "bas\u0131c " + "h" * 20,  # a dotless i: matched as i, not lowered to it
    "to\u212aen " + "j" * 20,  # a Kelvin sign: matched as k, lowered to k
    "pa\u017fsword=hunter22",  # a long s: matched case-insensitively, not by str.lower
]


@pytest.mark.parametrize("seed", range(40))
def test_skipping_patterns_by_their_needles_masks_exactly_what_every_pattern_does(
    seed: int,
) -> None:
    """Each default pattern runs only where a substring every match contains is there;
    the result is the same as running every pattern on every text."""
    assert set(_NEEDLES) == {label for label, _ in DEFAULT_PATTERNS}
    rng = random.Random(seed)
    redactor = Redactor()
    for _ in range(50):
        text = "".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 8)))
        assert redactor.redact(text) == _unscreened(text), text


def test_short_text_is_screened_by_one_search_with_the_same_masks() -> None:
    """Below `_SHORT` characters the needles are screened by one search of the lowered
    text (any case of a needle is found): every piece, in every case, alone and in pairs,
    masks exactly what running every pattern masks."""
    redactor = Redactor()
    short = 0
    for a in _PIECES:
        for b in ("", *_PIECES):
            for text in (a + b, (a + b).upper(), (a + b).lower(), (a + b).title()):
                short += len(text) < _SHORT
                assert redactor.redact(text) == _unscreened(text), text
    assert short > 100
    assert redactor.redact("pwd=hunter22") == f"pwd={MASK}"  # 12 characters, screened


def _unscreened(text: str) -> str:
    for pattern in _EVERYTHING:
        text = pattern.sub(
            lambda m: (
                m.group(0)[: m.start(1) - m.start(0)] + MASK + m.group(0)[m.end(1) - m.start(0) :]
                if m.re.groups and m.group(1) is not None
                else MASK
            ),
            text,
        )
    return text


_EVERYTHING = [re.compile(p) for _, p in DEFAULT_PATTERNS]
