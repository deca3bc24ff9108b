"""settings.py: every THREADLINE_* variable read when `Settings()` is built (never at
import), secrets never shown, the standard OTEL_* variables honoured."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from threadline.settings import Settings


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("STORE", "MODEL", "LOG", "RELEASE", "WEBHOOK_SECRET", "DELIVERY_RETENTION"):
        monkeypatch.delenv(f"THREADLINE_{name}", raising=False)
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_variables_are_read_when_settings_are_built(env: pytest.MonkeyPatch) -> None:
    before = Settings()
    assert before.store == "sqlite:///.threadline/threads.db" and before.release is False
    env.setenv("THREADLINE_STORE", "postgresql://db/threads")
    env.setenv("THREADLINE_RELEASE", "1")
    env.setenv("THREADLINE_DELIVERY_RETENTION", "P7D")
    env.setenv("THREADLINE_UNKNOWN_THING", "ignored")
    after = Settings()
    assert (after.store, after.release) == ("postgresql://db/threads", True)
    assert after.delivery_retention == timedelta(days=7)
    assert before.store == "sqlite:///.threadline/threads.db"  # built earlier: unchanged
    env.setenv("THREADLINE_DELIVERY_RETENTION", "600")
    assert Settings().delivery_retention == timedelta(minutes=10)


def test_secrets_are_never_shown(env: pytest.MonkeyPatch) -> None:
    env.setenv("THREADLINE_WEBHOOK_SECRET", "whsec-do-not-print")
    settings = Settings()
    assert settings.webhook_secret is not None
    assert settings.webhook_secret.get_secret_value() == "whsec-do-not-print"
    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        assert "whsec-do-not-print" not in shown


def test_standard_otel_variables_are_honoured(env: pytest.MonkeyPatch) -> None:
    env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert Settings().otel_endpoint == "http://collector:4318"
    env.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4318/v1/traces")
    assert Settings().otel_endpoint == "http://traces:4318/v1/traces"  # the specific one wins


def test_a_malformed_value_is_a_clear_error(env: pytest.MonkeyPatch) -> None:
    env.setenv("THREADLINE_RELEASE", "perhaps")
    with pytest.raises(ValidationError, match="release"):
        Settings()
