"""Sign-in throttling for the studio's login page.

Gradio checks a password on ``POST /login`` and answers 400 when it is wrong, as often as it is asked:
a password can be guessed at the speed of the network. This ASGI middleware sits in front of that
route. After a few free failures, each further failure from the same client address *or* for the same
username doubles the wait before the next attempt is heard (a guesser rotating addresses still meets
the per-user wait; one rotating names still meets the per-address one). A success clears both. Every
failure is logged with the address and the username.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

log = logging.getLogger("tunestudio.auth")

LOGIN_PATHS = ("/login", "/login/")
TOO_MANY = "Too many failed sign-ins from this address or for this user: try again in {seconds} s."


@dataclass
class LoginThrottle:
    """Failure counts per key (``client:<address>``, ``user:<name>``) and when each may try again."""

    free_attempts: int = 3
    base_delay: float = 1.0
    max_delay: float = 300.0
    max_keys: int = 10_000
    clock: Callable[[], float] = time.monotonic
    _state: OrderedDict[str, tuple[int, float]] = field(default_factory=OrderedDict)

    @staticmethod
    def keys(client: str, username: str) -> tuple[str, str]:
        return f"client:{client}", f"user:{username}"

    def wait_seconds(self, client: str, username: str) -> float:
        now = self.clock()
        return max([0.0] + [self._state.get(k, (0, 0.0))[1] - now for k in self.keys(client, username)])

    def failed(self, client: str, username: str) -> int:
        """Record a wrong password; return the longest run of failures among the two keys."""
        worst = 0
        for key in self.keys(client, username):
            count = self._state.pop(key, (0, 0.0))[0] + 1
            extra = count - self.free_attempts
            delay = 0.0 if extra < 0 else min(self.max_delay, self.base_delay * 2**extra)
            self._state[key] = (count, self.clock() + delay)
            worst = max(worst, count)
        while len(self._state) > self.max_keys:
            self._state.popitem(last=False)
        return worst

    def succeeded(self, client: str, username: str) -> None:
        for key in self.keys(client, username):
            self._state.pop(key, None)


class LoginThrottleMiddleware:
    """Refuses ``POST /login`` with 429 while the client or the username must wait."""

    def __init__(self, app: Callable[..., Awaitable[None]], throttle: LoginThrottle) -> None:
        self.app = app
        self.throttle = throttle

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in LOGIN_PATHS:
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        replay = _replayer(body)
        form = await Request(scope, replay()).form()
        username = str(form.get("username", "")).strip()
        client = (scope.get("client") or ("unknown", 0))[0]
        wait = self.throttle.wait_seconds(client, username)
        if wait > 0:
            log.warning("sign-in refused for user %r from %s: throttled for %.0f s", username, client, wait)
            response = JSONResponse({"detail": TOO_MANY.format(seconds=max(1, round(wait)))}, status_code=429,
                                    headers={"Retry-After": str(max(1, round(wait)))})
            await response(scope, replay(), send)
            return
        status: list[int] = []

        async def watch(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        await self.app(scope, replay(), watch)
        if status and status[0] == 200:
            self.throttle.succeeded(client, username)
        elif status and status[0] in (400, 401):
            count = self.throttle.failed(client, username)
            log.warning("failed sign-in for user %r from %s (%d in a row)", username, client, count)


async def _read_body(receive: Callable) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _replayer(body: bytes) -> Callable[[], Callable[[], Awaitable[dict[str, Any]]]]:
    """Each call gives a fresh ``receive`` that hands the already-read body over once."""

    def make() -> Callable[[], Awaitable[dict[str, Any]]]:
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return receive

    return make
