"""Configuration from the environment (12-factor config), read when an app starts.

Nothing reads the environment at import time; `Settings()` is built by the CLI or server
at start-up and handed to what needs it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Every `THREADLINE_*` variable.

    Attributes:
        store: store URL (`sqlite:///...`, `postgresql://...`, `memory://`).
        model: `provider:model` (`local:smollm2`, `openai:gpt-4.1-mini`, ...).
        log: where the JSON event log goes: `stderr`, `stdout`, `off`, or a file path.
        release: refuse to run prompts/tool schemas that differ from threadline.lock.
        retrieval: retrieval index URL (`sqlite:///...` embedded, `postgresql://...`).
        embeddings: embedder of the index: `local` (all-MiniLM-L6-v2, offline),
            `openai:MODEL` (an OpenAI-compatible `/embeddings`, `OPENAI_BASE_URL`), `none`.
        local_repack: let llama.cpp repack the local model's weights for the CPU
            (`use_extra_bufts`); off by default: the AMX repacking kernel crashes on some
            Xeons (docs/models.md).
        rate_limits: client-side rate limits shared by every process on the store,
            `KIND:NAME=LIMIT/INTERVAL` entries (`model:openai=500/1m, tokens:openai=200000/1m,
            tool:search=5/1s`; `threadline.ratelimits`, docs/operations.md).
        gc_freeze: `threadline serve`, `worker` and `mcp` freeze the objects made at
            start-up once ready (`threadline.settle_heap`), so full garbage collections
            no longer walk them; `0` turns it off (docs/operations.md).
    """

    model_config = SettingsConfigDict(env_prefix="THREADLINE_", extra="ignore")

    store: str = "sqlite:///.threadline/threads.db"
    retrieval: str = "sqlite:///.threadline/index.db"
    embeddings: str = "local"
    model: str = "local:smollm2"
    log: str = "stderr"
    release: bool = False
    lock_file: str = "threadline.lock"
    local_repack: bool = False
    rate_limits: str = ""
    gc_freeze: bool = True
    # The server (docs/server.md): inbound webhooks are verified with `webhook_secret`;
    # pending approvals and questions are POSTed to `notify_url`, signed with the same
    # secret; `public_url` is the base the notification says to respond to; `api_key`
    # is what `--server` CLI commands send.
    webhook_secret: SecretStr | None = None
    notify_url: str | None = None
    public_url: str | None = None
    api_key: SecretStr | None = None
    # GET /metrics (docs/observability.md): served by `threadline serve` unless `metrics`
    # is off; open to scrapers unless `metrics_auth` (then a key with the `read` scope).
    metrics: bool = True
    metrics_auth: bool = False
    # Channels (docs/channels.md): which run in `threadline serve`, comma separated
    # (`slack,email`); each reads its own THREADLINE_SLACK_* / THREADLINE_EMAIL_* variables.
    channels: str = ""
    # How long inbound delivery ids (webhooks, triggers, Slack requests, mails) are kept
    # to refuse redeliveries: seconds or ISO 8601 (`P7D`); at least ten minutes.
    delivery_retention: timedelta = timedelta(days=1)
    # OpenTelemetry (docs/observability.md): traces are exported when `otel` is on, or, when
    # it is unset, when the standard variables ask for an exporter or name an endpoint.
    # `otel_content` records prompt and completion text (redacted) on the spans.
    otel: bool | None = None
    otel_content: bool = False
    otel_traces_exporter: str | None = Field(
        None, validation_alias=AliasChoices("OTEL_TRACES_EXPORTER")
    )
    otel_endpoint: str | None = Field(
        None,
        validation_alias=AliasChoices(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"
        ),
    )
    otel_protocol: str | None = Field(
        None,
        validation_alias=AliasChoices(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"
        ),
    )
    otel_sdk_disabled: bool = Field(False, validation_alias=AliasChoices("OTEL_SDK_DISABLED"))
    otel_metrics_exporter: str | None = Field(
        None, validation_alias=AliasChoices("OTEL_METRICS_EXPORTER")
    )

    @field_validator("delivery_retention", mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> Any:
        """A bare number of seconds (`600`), as documented: the environment gives it as a
        string, which pydantic would read as an ISO 8601 duration only."""
        if isinstance(value, str) and value.strip().replace(".", "", 1).isdigit():
            return float(value)
        return value
