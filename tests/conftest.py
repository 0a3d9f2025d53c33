import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


import pytest  # noqa: E402


@pytest.fixture
def ctx(tmp_path):
    """A studio context on a fresh home under ``tmp_path``, whose files may name data anywhere in ``tmp_path``.
    A module that needs another context defines its own ``ctx``, which takes precedence."""
    from app.core.settings import Settings
    from app.services.context import Context

    c = Context.open(Settings.from_env({"TUNESTUDIO_HOME": str(tmp_path / "home"),
                                        "TUNESTUDIO_DATA_ROOTS": str(tmp_path)}))
    yield c
    c.close()
