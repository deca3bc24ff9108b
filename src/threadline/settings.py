"""Configuration from the environment (12-factor config), read when an app starts.

Nothing reads the environment at import time; `Settings()` is built by the CLI or server
at start-up and handed to what needs it.
"""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Every `THREADLINE_*` variable.

    Attributes:
        store: store URL (`sqlite:///...`, `postgresql://...`, `memory://`).
        model: `provider:model` (`local:smollm2`, `openai:gpt-4.1-mini`, ...).
        log: where the JSON event log goes: `stderr`, `stdout`, `off`, or a file path.
        release: refuse to run prompts/tool schemas that differ from threadline.lock.
    """

    model_config = SettingsConfigDict(env_prefix="THREADLINE_", extra="ignore")

    store: str = "sqlite:///.threadline/threads.db"
    model: str = "local:smollm2"
    log: str = "stderr"
    release: bool = False
    lock_file: str = "threadline.lock"
