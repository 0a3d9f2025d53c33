"""Serving rules: local bind, no share/SSR, downloads only from exports, optional login that works."""

import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import pytest

from app.core.settings import Settings
from app.ui.server import launch_kwargs, serve
from tests.support.studio import ROOT, Studio, free_port


def settings(tmp_path, **env):
    return Settings.from_env({"TUNESTUDIO_HOME": str(tmp_path / "home"), **env})


def test_defaults_bind_locally_without_share_ssr_or_login(tmp_path):
    s = settings(tmp_path)
    kw = launch_kwargs(s)
    assert kw["server_name"] == "127.0.0.1" and kw["server_port"] == 7860
    assert kw["share"] is False and kw["ssr_mode"] is False and kw["auth"] is None
    assert kw["allowed_paths"] == [str(s.exports_dir)]
    assert kw["max_file_size"] == s.max_upload_bytes


def test_theme_uses_only_local_fonts(tmp_path):
    theme = launch_kwargs(settings(tmp_path))["theme"]
    fonts = [str(getattr(f, "name", f)) for f in theme.font + theme.font_mono]
    assert fonts and not any(type(f).__name__ == "GoogleFont" for f in theme.font + theme.font_mono), fonts


def test_login_is_required_when_a_password_is_configured(tmp_path):
    port = free_port()
    s = settings(tmp_path, TUNESTUDIO_PORT=str(port), TUNESTUDIO_AUTH_USER="ana",
                 TUNESTUDIO_AUTH_PASSWORD="s3cret")
    demo, worker, ctx = serve(s, embedded_worker=False, block=False)
    try:
        base = f"http://127.0.0.1:{port}"
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(f"{base}/config", timeout=10)
        assert denied.value.code == 401
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        bad = urllib.parse.urlencode({"username": "ana", "password": "nope"}).encode()
        with pytest.raises(urllib.error.HTTPError):
            opener.open(f"{base}/login", data=bad, timeout=10)
        good = urllib.parse.urlencode({"username": "ana", "password": "s3cret"}).encode()
        assert opener.open(f"{base}/login", data=good, timeout=10).status == 200
        assert opener.open(f"{base}/config", timeout=10).status == 200
    finally:
        demo.close()
        ctx.close()


def test_serve_takes_host_and_port_flags_over_the_environment(tmp_path):
    port = free_port()
    studio = Studio(tmp_path / "home", port, env={"TUNESTUDIO_PORT": str(free_port()), "TUNESTUDIO_HOST": "localhost"})
    studio.start()
    try:
        assert f"TuneStudio at http://127.0.0.1:{port}" in studio.log.read_text()
    finally:
        studio.stop()


@pytest.mark.parametrize(("args", "message"), [
    (["--port", "0"], "argument --port: expected a port number (1-65535), got 0"),
    (["--port", "http"], "argument --port: expected a port number (1-65535), got 'http'"),
    (["--port"], "argument --port: expected one argument"),
])
def test_serve_refuses_a_bad_port_by_name(tmp_path, args, message):
    done = subprocess.run([sys.executable, "-m", "app.cli", "serve", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={"TUNESTUDIO_HOME": str(tmp_path), "PATH": ""})
    assert done.returncode == 2
    assert message in done.stderr
