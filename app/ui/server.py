"""`tunestudio serve`: the studio page plus the embedded worker, on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import inspect
import os
import signal

from app.core.settings import Settings


def launch_kwargs(settings: Settings) -> dict:
    """Everything ``Blocks.launch`` gets: local only, no share link, no SSR, no outside requests."""
    import gradio as gr
    from starlette.middleware import Middleware

    from app.ui.login_throttle import LoginThrottle, LoginThrottleMiddleware
    from app.ui.theme import CSS, theme

    kwargs = dict(
        server_name=settings.host,
        server_port=settings.port,
        share=False,
        ssr_mode=False,
        auth=settings.auth,
        auth_message="TuneStudio: sign in with the username and password from the studio's configuration.",
        max_file_size=settings.max_upload_bytes,
        allowed_paths=[str(settings.exports_dir)],
        theme=theme(),
        css=CSS,
        footer_links=[],
        pwa=False,
        mcp_server=False,
        show_error=True,
        quiet=True,
        app_kwargs={"middleware": [Middleware(LoginThrottleMiddleware, throttle=LoginThrottle())]},
    )
    # Gradio's only use of this private flag is a 3-second HEAD probe of its own URL whose failure (a
    # busy machine) it answers by suggesting a public share link: we never share, so the probe only
    # harms. Passed only while this Gradio still has it, so a release without it cannot break start-up.
    if "_frontend" in inspect.signature(gr.Blocks.launch).parameters:
        kwargs["_frontend"] = False
    return kwargs


def serve(settings: Settings | None = None, embedded_worker: bool = True, block: bool = True):
    """Open the registry, start the embedded worker (when the broker is the embedded one), serve."""
    settings = settings or Settings.from_env()
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Gradio keeps uploads in its temp dir until the data step registers them: inside the artifacts folder.
    os.environ.setdefault("GRADIO_TEMP_DIR", str(settings.artifacts_dir / "uploads-tmp"))
    from app.services.context import Context
    from app.ui.app import build_app

    ctx = Context.open(settings)
    worker = None
    if embedded_worker and settings.embedded_broker:
        from worker.embedded import EmbeddedWorker

        worker = EmbeddedWorker(settings).start()
    demo = build_app(ctx)
    if block:
        signal.signal(signal.SIGTERM, _stop_on_sigterm)  # docker stop / kill: stop the worker too
    print(f"TuneStudio at http://{settings.host}:{settings.port}", flush=True)
    try:
        demo.queue(default_concurrency_limit=4).launch(prevent_thread_lock=not block, **launch_kwargs(settings))
    finally:
        if block:
            if worker is not None:
                worker.stop()
            ctx.close()
    return demo, worker, ctx


def _stop_on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt
