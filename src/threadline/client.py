"""A small HTTP client for a Threadline server: what `--server URL` CLI commands use.

It needs only the core install (httpx and pydantic): the request and response bodies come
from `threadline.wire`, which the server uses too, so no FastAPI is imported here.

Each method mirrors a runtime or store method and returns the same kinds of objects the
local path returns (`Thread` with its events, `Event`s), so a command can print a remote
thread exactly like a local one. Errors come back as the same exceptions too: 404 raises
`ThreadNotFound`, 409 `InvalidAction`, 403 `NotAllowed`; anything else `ServerError` with
the server's problem document.

    async with Client("http://127.0.0.1:8000", api_key="tl_...") as client:
        thread = await client.launch("deploybot", "deploy v1.5.0", wait=True)
        await client.approve(thread.id, thread.pending_approvals[0].call_id)

`Client.from_settings(url, settings)` takes the key from `THREADLINE_API_KEY`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import asdict
from typing import Any, Unpack

import httpx

from .errors import InvalidAction, NotAllowed, ServerError, ThreadNotFound
from .events import Budget, Event, Status, Thread
from .launch import LaunchOptions
from .runtime_actions import Verdict, VerdictOptions
from .settings import Settings
from .stores.base import ListOptions
from .wire import (
    ChannelList,
    ScheduleBody,
    ScheduleList,
    ScheduleOut,
    ThreadOut,
    ThreadPage,
    event_from_wire,
)

__all__ = ["Client"]


class Client:
    """Talks to one Threadline server.

    Args:
        base_url: e.g. `http://127.0.0.1:8000` (without `/v1`).
        api_key: sent as `Authorization: Bearer`; None for a `--no-auth` server.
        timeout: seconds per request (launch with `wait` extends it by `wait_timeout`).
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    @classmethod
    def from_settings(cls, base_url: str, settings: Settings) -> Client:
        key = settings.api_key.get_secret_value() if settings.api_key else None
        return cls(base_url, api_key=key)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- requests -------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        seconds: float | None = None,
    ) -> Any:
        try:
            resp = await self._http.request(
                method,
                path,
                json=json_body,
                params={k: v for k, v in (params or {}).items() if v is not None},
                timeout=seconds or self._timeout,
            )
        except httpx.HTTPError as exc:
            raise ServerError(
                f"cannot reach {self.base_url}: {type(exc).__name__}: {exc}"
            ) from None
        if resp.status_code >= 400:
            _raise_for(resp)
        return resp.json() if resp.content else None

    async def launch(
        self,
        agent: str,
        message: str,
        *,
        wait: bool = False,
        wait_timeout: float = 30.0,
        **options: Unpack[LaunchOptions],
    ) -> ThreadOut:
        """Start a thread; with `wait`, return once it stops running (or the timeout).
        `budget` / `tree_budget` replace the agent's for this thread (and its tree)."""
        _declared(options, LaunchOptions.__optional_keys__)
        body: dict[str, Any] = {
            "agent": agent,
            "message": message,
            "metadata": options.get("metadata") or {},
            "wait": wait,
            "wait_timeout": wait_timeout,
        }
        budgets = {"budget": options.get("budget"), "tree_budget": options.get("tree_budget")}
        for key, value in budgets.items():
            if value is not None:
                body[key] = value.model_dump(exclude_none=True)
        data = await self._request(
            "POST",
            "/v1/threads",
            json_body=body,
            seconds=self._timeout + (wait_timeout if wait else 0),
        )
        return ThreadOut.model_validate(data)

    async def channels(self) -> ChannelList:
        """The server's channels, cron schedules and webhook triggers (`GET /v1/channels`)."""
        return ChannelList.model_validate(await self._request("GET", "/v1/channels"))

    async def get(self, thread_id: str) -> ThreadOut:
        return ThreadOut.model_validate(await self._request("GET", f"/v1/threads/{thread_id}"))

    async def list_threads(self, **options: Unpack[ListOptions]) -> ThreadPage:
        """`Store.list` on the server (`GET /v1/threads`)."""
        _declared(options, ListOptions.__optional_keys__)
        params: dict[str, Any] = dict(options)
        if (status := options.get("status")) is not None:
            params["status"] = Status(status).value
        return ThreadPage.model_validate(await self._request("GET", "/v1/threads", params=params))

    async def events(self, thread_id: str, *, after: int = -1, limit: int = 1000) -> list[Event]:
        data = await self._request(
            "GET", f"/v1/threads/{thread_id}/events", params={"after": after, "limit": limit}
        )
        return [event_from_wire(e, thread_id=thread_id) for e in data["events"]]

    async def load(self, thread_id: str) -> Thread:
        """The whole thread with every event, like `Store.load`."""
        view = await self.get(thread_id)
        events: list[Event] = []
        while True:
            page = await self.events(thread_id, after=events[-1].seq if events else -1)
            events.extend(page)
            if not page:
                break
        return Thread(
            view.id, view.agent, events, metadata=view.metadata, created_at=view.created_at
        )

    async def stream(self, thread_id: str, *, after: int = -1) -> AsyncIterator[Event]:
        """Each event after `after`, then new ones as they are written (until closed)."""
        async with self._http.stream(
            "GET",
            f"/v1/threads/{thread_id}/events/stream",
            params={"after": after},
            timeout=httpx.Timeout(self._timeout, read=None),
        ) as resp:
            if resp.status_code >= 400:
                await resp.aread()
                _raise_for(resp)
            data: list[str] = []
            async for line in resp.aiter_lines():
                if line.startswith("data:"):
                    data.append(line[5:].strip())
                elif not line and data:
                    yield event_from_wire(json.loads("\n".join(data)), thread_id=thread_id)
                    data = []

    async def approve(
        self, thread_id: str, call_id: str, **verdict: Unpack[VerdictOptions]
    ) -> ThreadOut:
        body = _verdict_body(Verdict(call_id, **verdict))
        del body["call_id"]  # named by the path
        data = await self._request(
            "POST", f"/v1/threads/{thread_id}/approvals/{call_id}", json_body=body
        )
        return ThreadOut.model_validate(data)

    async def approve_many(self, thread_id: str, verdicts: Sequence[Verdict]) -> ThreadOut:
        """Verdicts on several pending calls, written together or not at all."""
        body = {"verdicts": [_verdict_body(verdict) for verdict in verdicts]}
        data = await self._request("POST", f"/v1/threads/{thread_id}/approvals", json_body=body)
        return ThreadOut.model_validate(data)

    async def respond_instead(self, thread_id: str, call_id: str, text: str) -> ThreadOut:
        """A message in place of a verdict on a pending call: it is not run, and the
        model reads the message and decides again."""
        data = await self._request(
            "POST",
            f"/v1/threads/{thread_id}/approvals/{call_id}/instead",
            json_body={"text": text},
        )
        return ThreadOut.model_validate(data)

    async def respond(self, thread_id: str, request_id: str, text: str) -> ThreadOut:
        data = await self._request(
            "POST",
            f"/v1/threads/{thread_id}/responses",
            json_body={"request_id": request_id, "text": text},
        )
        return ThreadOut.model_validate(data)

    async def message(self, thread_id: str, text: str) -> ThreadOut:
        data = await self._request(
            "POST", f"/v1/threads/{thread_id}/messages", json_body={"text": text}
        )
        return ThreadOut.model_validate(data)

    async def external_event(
        self, thread_id: str, name: str, payload: dict[str, Any] | None = None
    ) -> ThreadOut:
        data = await self._request(
            "POST",
            f"/v1/threads/{thread_id}/events",
            json_body={"name": name, "payload": payload or {}},
        )
        return ThreadOut.model_validate(data)

    async def cancel(self, thread_id: str, *, reason: str | None = None) -> ThreadOut:
        data = await self._request(
            "POST", f"/v1/threads/{thread_id}/cancel", json_body={"reason": reason}
        )
        return ThreadOut.model_validate(data)

    async def pause(self, thread_id: str, *, reason: str | None = None) -> ThreadOut:
        data = await self._request(
            "POST", f"/v1/threads/{thread_id}/pause", json_body={"reason": reason}
        )
        return ThreadOut.model_validate(data)

    async def resume(self, thread_id: str) -> ThreadOut:
        data = await self._request("POST", f"/v1/threads/{thread_id}/resume")
        return ThreadOut.model_validate(data)

    async def raise_budget(self, thread_id: str, budget: Budget) -> ThreadOut:
        body = budget.model_dump(exclude_none=True)
        data = await self._request("POST", f"/v1/threads/{thread_id}/budget", json_body=body)
        return ThreadOut.model_validate(data)

    async def fork(self, thread_id: str, *, at: int) -> ThreadOut:
        data = await self._request("POST", f"/v1/threads/{thread_id}/fork", json_body={"at": at})
        return ThreadOut.model_validate(data)

    async def settle(self, thread_id: str, *, within: float = 30.0, poll: float = 0.1) -> Thread:
        """Wait until the server's background runner stops the thread (awaiting someone,
        ended, paused) or `within` seconds pass; return the whole thread either way.

        What the CLI does after `approve`/`respond`/`message`/`resume --server` to show
        where the thread got to, like the local path's `--advance`.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        # Polling, not the SSE stream: status changes are what matter, and a GET is cheap.
        while loop.time() < deadline:
            if (await self.get(thread_id)).status != Status.RUNNING:
                break
            await asyncio.sleep(poll)
        return await self.load(thread_id)

    # -- schedules (the `SchedulesAPI` of cli/api.py) -----------------------------------------

    async def add_schedule(self, spec: ScheduleBody) -> ScheduleOut:
        data = await self._request("POST", "/v1/schedules", json_body=spec.model_dump())
        return ScheduleOut.model_validate(data)

    async def list_schedules(self) -> list[ScheduleOut]:
        return ScheduleList.model_validate(await self._request("GET", "/v1/schedules")).items

    async def get_schedule(self, name: str) -> ScheduleOut:
        return ScheduleOut.model_validate(await self._request("GET", f"/v1/schedules/{name}"))

    async def remove_schedule(self, name: str) -> None:
        await self._request("DELETE", f"/v1/schedules/{name}")

    async def pause_schedule(self, name: str) -> ScheduleOut:
        data = await self._request("POST", f"/v1/schedules/{name}/pause")
        return ScheduleOut.model_validate(data)

    async def resume_schedule(self, name: str) -> ScheduleOut:
        data = await self._request("POST", f"/v1/schedules/{name}/resume")
        return ScheduleOut.model_validate(data)

    async def ready(self) -> bool:
        try:
            resp = await self._http.get("/readyz")
        except httpx.HTTPError:
            return False
        return resp.status_code == 200


def _declared(options: Mapping[str, Any], keywords: frozenset[str]) -> None:
    """Raise the TypeError a signature raises for a keyword it does not declare: the server
    would ignore a misspelt option, so it must not reach the request."""
    unknown = sorted(options.keys() - keywords)
    if unknown:
        raise TypeError(f"unexpected keyword argument {unknown[0]!r}")


def _verdict_body(verdict: Verdict) -> dict[str, Any]:
    """`verdict` as the approval routes read it: the fields that are set (`VerdictBody`)."""
    return {k: v for k, v in asdict(verdict).items() if v is not None}


def _raise_for(resp: httpx.Response) -> None:
    try:
        problem = resp.json()
    except ValueError:
        problem = {}
    if not isinstance(problem, dict):
        problem = {}
    detail = str(problem.get("detail") or problem.get("title") or resp.reason_phrase)
    status = resp.status_code
    if status == 404 and "thread" in detail:
        raise ThreadNotFound(_thread_id_of(resp.request.url.path))
    if status == 409:
        raise InvalidAction(detail)
    if status == 403 and problem.get("title") == "Not allowed":
        raise NotAllowed(detail)
    raise ServerError(
        f"server answered {status} {problem.get('title') or ''}: {detail}".strip(),
        status=status,
        problem=problem,
    )


def _thread_id_of(path: str) -> str:
    parts = path.split("/")
    return parts[3] if len(parts) > 3 and parts[2] == "threads" else "?"
