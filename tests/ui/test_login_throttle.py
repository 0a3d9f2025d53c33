"""Sign-in throttling: the rule on a fake clock, then the real studio's /login answering 429."""

from __future__ import annotations

import logging
import time

import httpx

from app.core.settings import Settings
from app.ui.login_throttle import LoginThrottle
from app.ui.server import serve
from tests.support.studio import free_port


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_free_attempts_then_a_doubling_wait_capped_and_cleared_by_success():
    clock = Clock()
    throttle = LoginThrottle(free_attempts=3, base_delay=1.0, max_delay=8.0, clock=clock)
    for _ in range(2):
        throttle.failed("10.0.0.1", "ana")
        assert throttle.wait_seconds("10.0.0.1", "ana") == 0
    waits = []
    for _ in range(6):
        throttle.failed("10.0.0.1", "ana")
        waits.append(throttle.wait_seconds("10.0.0.1", "ana"))
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    clock.now += 8.0
    assert throttle.wait_seconds("10.0.0.1", "ana") == 0
    throttle.succeeded("10.0.0.1", "ana")
    throttle.failed("10.0.0.1", "ana")
    assert throttle.wait_seconds("10.0.0.1", "ana") == 0


def test_the_user_waits_from_any_address_and_the_address_for_any_user():
    throttle = LoginThrottle(free_attempts=1, clock=Clock())
    throttle.failed("10.0.0.1", "ana")
    assert throttle.wait_seconds("10.0.0.2", "ana") > 0
    assert throttle.wait_seconds("10.0.0.1", "bob") > 0
    assert throttle.wait_seconds("10.0.0.2", "bob") == 0


def test_memory_is_bounded():
    throttle = LoginThrottle(max_keys=10, clock=Clock())
    for i in range(100):
        throttle.failed(f"10.0.{i}.1", f"user{i}")
    assert len(throttle._state) == 10


def test_the_studio_refuses_a_guesser_with_429_and_logs_each_failure(tmp_path, caplog):
    port = free_port()
    s = Settings.from_env({"TUNESTUDIO_HOME": str(tmp_path / "home"), "TUNESTUDIO_PORT": str(port),
                           "TUNESTUDIO_AUTH_USER": "ana", "TUNESTUDIO_AUTH_PASSWORD": "s3cret"})
    demo, _worker, ctx = serve(s, embedded_worker=False, block=False)
    caplog.set_level(logging.WARNING, logger="tunestudio.auth")
    url = f"http://127.0.0.1:{port}/login"

    def sign_in(password: str) -> httpx.Response:
        # Multipart, as the login page's FormData sends it.
        return httpx.post(url, files={"username": (None, "ana"), "password": (None, password)}, timeout=10)

    try:
        assert [sign_in("guess").status_code for _ in range(3)] == [400, 400, 400]
        refused = sign_in("s3cret")
        assert refused.status_code == 429
        assert "Too many failed sign-ins" in refused.json()["detail"]
        time.sleep(float(refused.headers["Retry-After"]) + 0.2)
        assert sign_in("s3cret").status_code == 200
        assert sign_in("guess").status_code == 400, "a success clears the count"
    finally:
        demo.close()
        ctx.close()
    failures = [r.getMessage() for r in caplog.records if "failed sign-in" in r.getMessage()]
    assert failures[:3] == [f"failed sign-in for user 'ana' from 127.0.0.1 ({n} in a row)" for n in (1, 2, 3)]
    assert any("throttled" in r.getMessage() for r in caplog.records)
