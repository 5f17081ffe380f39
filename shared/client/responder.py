"""``Responder``: answer the server's JSON-RPC requests that arrive over SSE, by POST.

The protocol (see ``shared.correlation`` for the server side): the stream starts with
``event: session`` ``{"client_id", "token"}``; then ``event: request`` (a JSON-RPC 2.0 request
with a ``deadline``), ``event: cancel`` ``{"id", "reason"}`` and ``event: notification``. Each
request is answered once by POSTing a JSON-RPC response with ``Authorization: Bearer <token>``.

Across reconnects the responder keeps its client id and proves it with the token, so the server
hands it the requests still pending (re-sent: deduplicated here by id). A request cancelled by the
server has its handler cancelled (async) or its result dropped (sync, which runs in a thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from .. import jsonrpc
from .backoff import Backoff
from .stream import Event, EventStream, Status, StreamError

__all__ = ["Handler", "Responder", "RpcError"]

log = logging.getLogger(__name__)

_CLOCK_SLACK = 30.0  # seconds

Handler = Callable[[Any], Any] | Callable[[Any], Awaitable[Any]]


class RpcError(Exception):
    """Raise from a handler to answer with this JSON-RPC error instead of -32603."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


class Responder:
    """Answer requests sent to ``client_id`` on the events URL (e.g. ``.../bidi/events``).

    ``respond_url`` defaults to the sibling ``respond`` of the events URL. Register handlers with
    :meth:`register` or the :meth:`method` decorator; each gets the request's ``params`` and
    returns the result (sync or async). Unknown method: -32601; a handler that raises: -32603
    (or :class:`RpcError`'s own code). ``fallback(method, params)``, if set, answers every
    method that has no handler of its own.

    Run it with ``await responder.run()`` (until cancelled) or ``async with responder:`` (in the
    background; entering waits for the session).
    """

    def __init__(
        self,
        events_url: str,
        *,
        client_id: str | None = None,
        respond_url: str | None = None,
        headers: dict[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
        backoff: Backoff | None = None,
        read_timeout: float | None = 45.0,
        on_status: Callable[[Status], None] | None = None,
        on_log: Callable[[str], None] | None = None,
        remember: int = 10_000,
    ) -> None:
        self.events_url = events_url
        self.respond_url = respond_url or str(httpx.URL(events_url).join("respond"))
        self.client_id = client_id
        self.token: str | None = None
        self._handlers: dict[str, Handler] = {}
        self.fallback: Callable[[str, Any], Any] | None = None
        self._extra_headers = dict(headers or {})
        self._client = client
        self._backoff = backoff
        self._read_timeout = read_timeout
        self._on_status = on_status
        self._on_log = on_log
        # Request id -> "running" | "answered" | "cancelled" | the answer whose POST failed.
        self._seen: OrderedDict[str, str | dict[str, Any]] = OrderedDict()
        self._remember = remember
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._ready = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._post_client: httpx.AsyncClient | None = None
        self.answered = 0

    # -- handlers -----------------------------------------------------------------------------

    def register(self, method: str, handler: Handler) -> None:
        self._handlers[method] = handler

    def method(self, name: str) -> Callable[[Handler], Handler]:
        """Decorator: ``@responder.method("analyze")``."""

        def add(handler: Handler) -> Handler:
            self.register(name, handler)
            return handler

        return add

    # -- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Listen and answer until cancelled. Raises :class:`StreamError` when the server refuses
        for good (e.g. 409: the client id is taken) or another connection took over our id."""
        own = self._client is None
        client = self._client or httpx.AsyncClient(follow_redirects=True, timeout=10.0)
        self._post_client = client
        stream = EventStream(
            self._events_url(),
            client=client,
            headers=self._extra_headers,
            backoff=self._backoff,
            read_timeout=self._read_timeout,
            on_status=self._status,
        )
        try:
            async with stream:
                async for ev in stream:
                    if ev.event == "replaced":
                        raise StreamError(f"another connection took over client id {self.client_id!r}", 409)
                    self._dispatch(ev, stream)
        finally:
            self._ready.clear()
            tasks = list(self._tasks.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if own:
                await client.aclose()

    def run_sync(self) -> None:
        """Blocking form of :meth:`run` (Ctrl-C stops it)."""
        asyncio.run(self.run())

    async def wait_ready(self, timeout: float = 10.0) -> str:
        """Wait for the session; returns the client id."""
        await asyncio.wait_for(self._ready.wait(), timeout)
        assert self.client_id is not None
        return self.client_id

    async def __aenter__(self) -> Responder:
        runner = self._runner = asyncio.create_task(self.run(), name=f"responder:{self.client_id}")
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait({runner, ready}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            if runner.done():
                self._runner = None
                runner.result()  # raises why it stopped (e.g. StreamError: 409, the id is taken)
            await self.__aexit__()
            raise TimeoutError(f"no session from {self.events_url} within 15 s")
        return self

    async def __aexit__(self, *exc: object) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, StreamError):
                await runner

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    # -- events -------------------------------------------------------------------------------

    def _events_url(self) -> str:
        url = httpx.URL(self.events_url)
        if self.client_id:
            url = url.copy_set_param("client_id", self.client_id)
        return str(url)

    def _status(self, status: Status) -> None:
        if status.state != "open":
            self._ready.clear()
        if self._on_status is not None:
            self._on_status(status)

    def _say(self, text: str) -> None:
        log.info("%s", text)
        if self._on_log is not None:
            self._on_log(text)

    def _dispatch(self, ev: Event, stream: EventStream) -> None:
        try:
            data = ev.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            self._say(f"ignored {ev.event!r} event whose data is not a JSON object")
            return
        if ev.event == "session":
            self.client_id, self.token = str(data["client_id"]), str(data["token"])
            # The next reconnect proves who we are: same client id, Bearer token.
            stream.url = self._events_url()
            stream.headers["Authorization"] = f"Bearer {self.token}"
            self._ready.set()
            self._say(f"session: client id {self.client_id}")
        elif ev.event == "request":
            self._on_request(data)
        elif ev.event == "cancel":
            self._on_cancel(str(data.get("id")), str(data.get("reason", "")))
        elif ev.event == "notification":
            handler = self._handlers.get(str(data.get("method")))
            if handler is not None:
                task = asyncio.create_task(self._notify(handler, data.get("params")))
                self._tasks[f"notification:{id(task)}"] = task
                task.add_done_callback(lambda t: self._tasks.pop(f"notification:{id(t)}", None))

    def _remember_state(self, rid: str, state: str | dict[str, Any]) -> None:
        self._seen[rid] = state
        self._seen.move_to_end(rid)
        while len(self._seen) > self._remember:
            self._seen.popitem(last=False)

    def _on_request(self, msg: dict[str, Any]) -> None:
        rid = msg.get("id")
        if not isinstance(rid, str):
            self._say("ignored a request without a string id")
            return
        state = self._seen.get(rid)
        if isinstance(state, dict):
            # We answered but the POST did not get through; the server still waits: send it again.
            self._remember_state(rid, "running")
            self._start(rid, self._post(state))
            return
        if state is not None:
            return  # re-sent after a reconnect while we work on it (or after we finished): dedupe
        deadline = msg.get("deadline")
        self._remember_state(rid, "running")
        method = str(msg.get("method"))
        self._say(f"request {rid} {method} {json.dumps(msg.get('params'), ensure_ascii=False)[:200]}")
        self._start(rid, self._handle(rid, method, msg.get("params"), deadline))

    def _start(self, rid: str, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks[rid] = task
        task.add_done_callback(lambda t: self._tasks.pop(rid, None) if self._tasks.get(rid) is t else None)

    def _on_cancel(self, rid: str, reason: str) -> None:
        if self._seen.get(rid) == "running":
            self._remember_state(rid, "cancelled")
            task = self._tasks.get(rid)
            if task is not None:
                task.cancel()
            self._say(f"request {rid} cancelled by the server ({reason})")

    async def _handle(self, rid: str, method: str, params: Any, deadline: Any) -> None:
        handler = self._handlers.get(method)
        if handler is None and self.fallback is not None:
            handler = functools.partial(self.fallback, method)
        if handler is None:
            answer = jsonrpc.error_response(rid, jsonrpc.METHOD_NOT_FOUND, f"method not found: {method}")
        else:
            try:
                result = await self._call(handler, params, deadline)
            except asyncio.CancelledError:
                raise
            except TimeoutError:
                self._remember_state(rid, "cancelled")
                self._say(f"request {rid}: the deadline passed while the handler ran; no answer sent")
                return
            except RpcError as exc:
                answer = jsonrpc.error_response(rid, exc.code, exc.message, exc.data)
            except Exception as exc:
                log.debug("handler for %r failed", method, exc_info=True)
                answer = jsonrpc.error_response(rid, jsonrpc.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
            else:
                answer = jsonrpc.result_response(rid, result)
        if self._seen.get(rid) != "running":
            return  # cancelled while a sync handler ran in its thread: the result is not wanted
        await self._post(answer)

    async def _call(self, handler: Handler, params: Any, deadline: Any) -> Any:
        # The server enforces deadlines (it sends `cancel`); ours is only a backstop for a cancel
        # missed while disconnected, with slack because our clock may differ from the server's.
        remaining = None
        if isinstance(deadline, int | float) and not isinstance(deadline, bool):
            remaining = max(1.0, deadline - time.time() + _CLOCK_SLACK)
        if inspect.iscoroutinefunction(handler):  # partials of async functions count too
            return await asyncio.wait_for(handler(params), remaining)
        result = await asyncio.wait_for(asyncio.to_thread(handler, params), remaining)
        if inspect.isawaitable(result):
            result = await asyncio.wait_for(result, remaining)
        return result

    async def _notify(self, handler: Handler, params: Any) -> None:
        try:
            result = handler(params)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("notification handler failed")

    async def _post(self, answer: dict[str, Any]) -> None:
        """POST an answer; network errors are retried a few times, then kept for a re-send."""
        rid = str(answer["id"])
        assert self._post_client is not None, "only called while run() runs"
        for attempt in range(4):
            try:
                response = await self._post_client.post(
                    self.respond_url,
                    json=answer,
                    headers={**self._extra_headers, "Authorization": f"Bearer {self.token}"},
                )
            except httpx.TransportError as exc:
                if attempt == 3:
                    self._remember_state(rid, answer)  # sent again if the server re-sends the request
                    self._say(f"could not deliver the answer to {rid}: {exc}")
                    return
                await asyncio.sleep(0.2 * 2**attempt)
                continue
            if response.status_code == 200:
                self._remember_state(rid, "answered")
                self.answered += 1
                self._say(f"answered {rid}" + (" (error)" if "error" in answer else ""))
            else:
                self._remember_state(rid, "answered")
                self._say(f"answer to {rid} refused: HTTP {response.status_code} {_detail(response)}")
            return


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", ""))
    except (ValueError, AttributeError):
        return response.text[:200]
