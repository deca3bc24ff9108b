"""Slack, through the official `slack_sdk` (`pip install 'threadline[channels]'`).

Inbound (mounted under /v1/channels/slack; point the Slack app's URLs there):

    POST /events         Events API: an app mention or a DM launches a thread; a reply in
                         a thread Threadline posted in answers its question (or continues it)
    POST /commands       a slash command (`/deploy the backend`) launches a thread
    POST /interactions   Approve / Reject… / Edit… buttons and their modals

Every request is verified with the app's signing secret (`slack_sdk.signature`: v0
HMAC-SHA256 over `v0:timestamp:body`, timestamps within 5 minutes) and remembered by
signature in the store, so a replayed request is refused; a message is acted on once
even when Slack delivers it twice (its channel and ts are remembered too). Only Slack
users mapped to a responder (`THREADLINE_SLACK_RESPONDERS=U0123:alice`) may approve,
reject or edit; the runtime then checks the approval's own approvers.

Outbound (`send`): Web API calls through `AsyncWebClient` (`chat.postMessage` in the
thread the conversation started in, `chat.update` of an approval once decided,
`views.open` for the modals, `chat.postEphemeral` to tell one user why not).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, HTTPException, Request
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from ..errors import ChannelError, ConfigError, InvalidAction, NotAllowed, ThreadNotFound
from ..events import HumanRequest, Status, Thread, utcnow
from ..runtime_actions import Verdict
from . import slack_blocks as ui
from .base import ChannelHub, Destination, Notice
from .registry import ChannelSettings

__all__ = ["SlackChannel", "SlackSettings", "from_env"]

log = logging.getLogger("threadline.channels.slack")

_VIEW_FIELDS = {ui.REJECT_VIEW: "comment", ui.EDIT_VIEW: "arguments", ui.INSTEAD_VIEW: "message"}
"""The modal of each callback id -> the one field it collects."""

_FATAL = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "invalid_blocks",
        "msg_too_long",
        "no_permission",
        "missing_scope",
    }
)
"""Web API errors that a retry cannot fix."""


class SlackSettings(ChannelSettings):
    """`THREADLINE_SLACK_*`: the app's credentials, the agent it launches, who may answer."""

    model_config = SettingsConfigDict(env_prefix="THREADLINE_SLACK_", extra="ignore")

    bot_token: SecretStr | None = None
    signing_secret: SecretStr | None = None
    api_url: str = "https://slack.com/api/"


def from_env(agents: Sequence[str]) -> SlackChannel:
    """The Slack channel from `THREADLINE_SLACK_*` (see docs/channels.md)."""
    cfg = SlackSettings()
    if cfg.bot_token is None or cfg.signing_secret is None:
        raise ConfigError(
            "the slack channel needs THREADLINE_SLACK_BOT_TOKEN (xoxb-...) and "
            "THREADLINE_SLACK_SIGNING_SECRET (the app's Basic Information page)"
        )
    return SlackChannel(
        bot_token=cfg.bot_token.get_secret_value(),
        signing_secret=cfg.signing_secret.get_secret_value(),
        agent=cfg.launched_agent(agents),
        responders=cfg.responder_names(),
        api_url=cfg.api_url,
    )


class SlackChannel:
    """Slack as a channel (see the module docstring).

    Args:
        bot_token: the app's bot token (`xoxb-...`).
        signing_secret: verifies every inbound request.
        agent: the agent a mention, DM or slash command launches.
        responders: Slack user id -> responder name (who may approve and answer).
        api_url: the Web API base URL (Slack's, unless testing against a recorder).
        clock: unix seconds, for the 5-minute window.
    """

    name = "slack"

    def __init__(
        self,
        *,
        bot_token: str,
        signing_secret: str,
        agent: str,
        responders: Mapping[str, str],
        api_url: str = "https://slack.com/api/",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.agent = agent
        self.responders = dict(responders)
        self.client = AsyncWebClient(token=bot_token, base_url=api_url.rstrip("/") + "/")
        self.clock = clock
        self._verifier = SignatureVerifier(signing_secret)

    # -- the Channel interface ------------------------------------------------------------

    def responder(self, identity: str) -> str | None:
        return self.responders.get(identity)

    def destination(self, address: str) -> Destination:
        if not address or any(c.isspace() for c in address):
            raise ConfigError(f"slack route {address!r}: give a channel (#oncall or C0123)")
        return Destination(channel="slack", address=address, conversation={"channel": address})

    async def start(self, hub: ChannelHub) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(
        self, notice: Notice, to: Destination, previous: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """Post `notice` in the conversation's thread, or update the message it decides."""
        if notice.kind == "decided" and previous and previous.get("ts"):
            text, updated = ui.decided(notice)
            await self._call(
                "chat_update",
                channel=previous["channel"],
                ts=previous["ts"],
                text=text,
                blocks=updated,
            )
            return {"channel": previous["channel"], "ts": previous["ts"], "updated": True}
        channel = str(to.conversation.get("channel") or to.address)
        # A reminder goes under the approval it is about when the conversation has no thread.
        thread_ts = to.conversation.get("thread_ts") or (previous or {}).get("ts")
        text, blocks = ui.message(notice)
        kwargs: dict[str, Any] = {"channel": channel, "text": text}
        if blocks is not None:
            kwargs["blocks"] = blocks
        if thread_ts:
            kwargs["thread_ts"] = thread_ts
        data = await self._call("chat_postMessage", **kwargs)
        posted_in, ts = str(data.get("channel", channel)), str(data.get("ts", ""))
        return {"channel": posted_in, "ts": ts, "link": f"{posted_in}:{thread_ts or ts}"}

    async def _call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        """One Web API call; its failures as `ChannelError` (retryable unless fatal)."""
        try:
            response = await getattr(self.client, method)(**kwargs)
        except SlackApiError as exc:
            error = str(exc.response.get("error", "unknown_error"))
            raise ChannelError(f"slack {method}: {error}", retryable=error not in _FATAL) from None
        except (SlackClientError, OSError, TimeoutError) as exc:
            raise ChannelError(f"slack {method}: {type(exc).__name__}: {exc}") from None
        data: dict[str, Any] = dict(response.data) if isinstance(response.data, dict) else {}
        return data

    # -- inbound --------------------------------------------------------------------------

    def router(self, hub: ChannelHub) -> APIRouter:
        router = APIRouter()

        @router.post("/events", summary="Slack Events API (signed by Slack)")
        async def events(request: Request) -> dict[str, Any]:
            payload = _json_object(await self._verified(request, hub))
            if payload.get("type") == "url_verification":
                return {"challenge": str(payload.get("challenge", ""))}
            event = payload.get("event")
            if payload.get("type") == "event_callback" and isinstance(event, dict):
                await self._on_event(hub, event)
            return {"ok": True}

        @router.post("/commands", summary="Slack slash commands (signed by Slack)")
        async def commands(request: Request) -> dict[str, Any]:
            form = _form(await self._verified(request, hub))
            return await self._on_command(hub, form)

        @router.post("/interactions", summary="Slack buttons and modals (signed by Slack)")
        async def interactions(request: Request) -> dict[str, Any]:
            payload = _json_object(_form(await self._verified(request, hub)).get("payload", ""))
            return await self._on_interaction(hub, payload)

        return router

    async def _verified(self, request: Request, hub: ChannelHub) -> bytes:
        """The raw body of a request Slack signed, seen for the first time; else 401/409."""
        raw = await request.body()
        timestamp = request.headers.get("x-slack-request-timestamp", "")
        signature = request.headers.get("x-slack-signature", "")
        if not timestamp or not signature:
            raise HTTPException(401, "unsigned: X-Slack-Request-Timestamp and X-Slack-Signature")
        expected = self._verifier.generate_signature(timestamp=timestamp, body=raw) or ""
        if not _same(expected, signature):
            raise HTTPException(401, "the Slack signature does not match the body")
        if not timestamp.isascii() or not timestamp.isdigit():
            raise HTTPException(401, "X-Slack-Request-Timestamp must be unix seconds")
        if abs(self.clock() - int(timestamp)) > 300:
            raise HTTPException(401, "stale request: its timestamp is over 5 minutes away")
        if not await hub.deliveries.remember(f"slack:{signature}", at=utcnow()):
            raise HTTPException(409, "replayed request: this signature was already received")
        return raw

    async def _on_event(self, hub: ChannelHub, event: dict[str, Any]) -> None:
        if event.get("bot_id") or event.get("subtype") or not event.get("user"):
            return  # our own posts, edits, joins: not people talking to the agent
        channel, ts = str(event.get("channel", "")), str(event.get("ts", ""))
        if not channel or not ts:
            return
        # A mention arrives as `app_mention` and as `message`: act on it once.
        if not await hub.deliveries.remember(f"slack-message:{channel}:{ts}", at=utcnow()):
            return
        user, text = str(event["user"]), _without_mentions(str(event.get("text", "")))
        thread_ts = event.get("thread_ts")
        if thread_ts:
            thread_id = await hub.outbox.linked("slack", f"{channel}:{thread_ts}")
            if thread_id is not None:
                await self._reply(hub, thread_id, channel, str(thread_ts), user, text)
                return
        direct = event.get("type") == "message" and event.get("channel_type") == "im"
        if event.get("type") != "app_mention" and not direct:
            return
        if not text:
            return
        await self._launch(hub, text, user, channel, str(thread_ts or ts))

    async def _launch(self, hub: ChannelHub, text: str, user: str, channel: str, root: str) -> str:
        """A thread that answers in the Slack thread of message `root`."""
        return await hub.launch(
            self.agent,
            text,
            channel="slack",
            sender=self.responder(user) or f"slack:{user}",
            conversation={"channel": channel, "thread_ts": root},
            links=(f"{channel}:{root}",),
        )

    async def _reply(
        self, hub: ChannelHub, thread_id: str, channel: str, thread_ts: str, user: str, text: str
    ) -> None:
        """A reply in a thread's Slack conversation: an answer, or a new message."""
        name = self.responder(user)
        by = name or f"slack:{user}"
        thread = await hub.store.load(thread_id)

        async def answer() -> Thread:
            if thread.status == Status.AWAITING_HUMAN and thread.state.human_request:
                request = next(
                    e
                    for e in reversed(thread.events)
                    if isinstance(e, HumanRequest) and e.request_id == thread.state.human_request
                )
                if request.responders and name not in request.responders:
                    raise NotAllowed(f"only {', '.join(request.responders)} may answer this")
                return await hub.runtime.respond(
                    thread_id, request.request_id, text, by=by, channel="slack"
                )
            return await hub.runtime.message(thread_id, text, sender=by, channel="slack")

        try:
            await hub.act(thread_id, answer)
        except (InvalidAction, NotAllowed, ConfigError) as exc:
            await self._tell(channel, user, f"Not taken: {exc}", thread_ts)

    async def _on_command(self, hub: ChannelHub, form: dict[str, str]) -> dict[str, Any]:
        text, user = form.get("text", "").strip(), form.get("user_id", "")
        channel = form.get("channel_id", "")
        if not text or not user or not channel:
            return _ephemeral(f"Usage: {form.get('command', '/command')} what you want done")
        try:
            root = await self._call(
                "chat_postMessage", channel=channel, text=f"<@{user}> asked: {ui.escape(text)}"
            )
        except ChannelError as exc:
            return _ephemeral(f"Could not start: {exc}")
        posted_in, ts = str(root.get("channel", channel)), str(root.get("ts", ""))
        thread_id = await self._launch(hub, text, user, posted_in, ts)
        return _ephemeral(f"Started {thread_id}; the answer comes in the thread.")

    async def _on_interaction(self, hub: ChannelHub, payload: dict[str, Any]) -> dict[str, Any]:
        user = str((payload.get("user") or {}).get("id", ""))
        kind = payload.get("type")
        if kind == "block_actions":
            actions = payload.get("actions") or [{}]
            await self._on_button(hub, payload, actions[0], user)
            return {}
        if kind == "view_submission":
            return await self._on_submit(hub, payload.get("view") or {}, user)
        return {}

    async def _on_button(
        self, hub: ChannelHub, payload: dict[str, Any], action: dict[str, Any], user: str
    ) -> None:
        action_id = action.get("action_id")
        if action_id not in ui.APPROVAL_ACTIONS:
            return
        channel = str((payload.get("channel") or {}).get("id", ""))
        message_ts = str((payload.get("message") or {}).get("ts", ""))
        target = _json_object(str(action.get("value", "")))
        thread_id, call_id = str(target.get("thread", "")), str(target.get("call", ""))
        name = self.responder(user)
        if name is None:
            await self._tell(channel, user, "You are not an approver here.", message_ts)
            return
        approve, reject, _edit, instead = ui.APPROVAL_ACTIONS
        if action_id == approve:
            error = await self._decide(hub, thread_id, Verdict(call_id), by=name)
            if error:
                await self._tell(channel, user, error, message_ts)
            return
        meta = json.dumps({"thread": thread_id, "call": call_id, "channel": channel})
        if action_id == reject:
            view = ui.reject_view(meta)
        elif action_id == instead:
            view = ui.instead_view(meta)
        else:
            try:
                call = (await hub.store.load(thread_id)).state.pending.get(call_id)
            except ThreadNotFound:
                call = None
            if call is None or call.approval != "requested":
                await self._tell(channel, user, "This approval was already decided.", message_ts)
                return
            view = ui.edit_view(meta, call.tool, call.arguments)
        try:
            await self._call("views_open", trigger_id=str(payload.get("trigger_id", "")), view=view)
        except ChannelError as exc:
            await self._tell(channel, user, f"Could not open the form: {exc}", message_ts)

    async def _on_submit(self, hub: ChannelHub, view: dict[str, Any], user: str) -> dict[str, Any]:
        block = _VIEW_FIELDS.get(str(view.get("callback_id")))
        if block is None:
            return {}
        meta = _json_object(str(view.get("private_metadata", "")))
        thread_id, call_id = str(meta.get("thread", "")), str(meta.get("call", ""))
        values = (view.get("state") or {}).get("values") or {}
        name = self.responder(user)
        if name is None:
            return _field_error(block, "You are not an approver here.")
        raw = str(((values.get(block) or {}).get(block) or {}).get("value") or "")
        if block == "message":
            error = await self._decide(
                hub, thread_id, Verdict(call_id), by=name, instead=raw.strip()
            )
        elif block == "comment":
            rejection = Verdict(call_id, approved=False, comment=raw.strip() or None)
            error = await self._decide(hub, thread_id, rejection, by=name)
        else:
            try:
                edited = json.loads(raw)
            except ValueError as exc:
                return _field_error(block, f"Not JSON: {exc}")
            if not isinstance(edited, dict):
                return _field_error(block, "The arguments must be a JSON object.")
            error = await self._decide(
                hub, thread_id, Verdict(call_id, edited_arguments=edited), by=name
            )
        return _field_error(block, error) if error else {}

    async def _decide(
        self,
        hub: ChannelHub,
        thread_id: str,
        verdict: Verdict,
        *,
        by: str,
        instead: str | None = None,
    ) -> str | None:
        """Give `verdict` (or, with `instead`, respond with a message instead of one)
        through the runtime; the reason it was refused, else None."""

        async def decide() -> Thread:
            if instead is not None:
                return await hub.runtime.respond_instead(
                    thread_id, verdict.call_id, instead, by=by, channel="slack"
                )
            return await hub.runtime.approve_many(thread_id, [verdict], by=by, channel="slack")

        try:
            await hub.act(thread_id, decide)
        except (InvalidAction, NotAllowed, ThreadNotFound, ConfigError) as exc:
            return str(exc)
        return None

    async def _tell(self, channel: str, user: str, text: str, thread_ts: str = "") -> None:
        """An ephemeral note only `user` sees (why a click or reply was not taken)."""
        if not channel:
            return
        kwargs: dict[str, Any] = {"channel": channel, "user": user, "text": text}
        if thread_ts:
            kwargs["thread_ts"] = thread_ts
        try:
            await self._call("chat_postEphemeral", **kwargs)
        except ChannelError as exc:
            log.info("could not tell %s in %s: %s", user, channel, exc)


def _same(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.strip().encode())


def _json_object(raw: bytes | str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        raise HTTPException(400, "the body is not JSON") from None
    if not isinstance(value, dict):
        raise HTTPException(400, "the body is not a JSON object")
    return value


def _form(raw: bytes) -> dict[str, str]:
    try:
        parsed = parse_qs(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise HTTPException(400, "the body is not UTF-8 form data") from None
    return {k: v[0] for k, v in parsed.items() if v}


def _without_mentions(text: str) -> str:
    """The message with `<@U...>` mentions removed (the agent needs the request only)."""
    return re.sub(r"<@[A-Z0-9]+>", " ", text).strip()


def _ephemeral(text: str) -> dict[str, Any]:
    return {"response_type": "ephemeral", "text": text}


def _field_error(block: str, message: str) -> dict[str, Any]:
    return {"response_action": "errors", "errors": {block: message[:150]}}
