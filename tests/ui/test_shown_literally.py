"""Every step and tab function that puts data or a person's words into a Markdown or HTML component
makes nothing of them: the hostile value renders to the same elements as a plain one, and its text
shows as written (Markdown rendered by markdown-it with HTML on; gr.HTML output read as HTML)."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from types import SimpleNamespace

import pytest
from markdown_it import MarkdownIt

from app.core.settings import Settings
from app.registry.models import Run
from app.services.context import Context
from app.services.data_preview import DataPreview
from app.services.estimate import ModelShape
from app.services.model_info import ModelInfo
from app.ui.steps import data as data_step
from app.ui.steps import method as method_step
from app.ui.steps import model as model_step
from app.ui.tabs import playground as playground_tab
from app.ui.tabs import run_view
from tests.support.tiny_models import config_for

HOSTILE = "<img src=http://127.0.0.1:9/x onerror=alert(1)> [click](http://example.com) **bold** <b>b</b> www.x.org $$1$$"
PLAIN = "plain"


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)


def tags(rendered: str) -> list[str]:
    parser = Tags()
    parser.feed(rendered)
    return parser.tags


def markdown(text: str) -> str:
    return MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"]).render(text)


def text_of(rendered: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", rendered))


def same_elements(make, render=markdown, shows: str = HOSTILE) -> None:
    """``make(value)`` rendered has the same elements for the hostile value as for a plain one, and
    shows ``shows`` (the hostile value, or what the message quotes of it) as written."""
    hostile, plain = render(make(HOSTILE)), render(make(PLAIN))
    assert tags(hostile) == tags(plain), hostile
    assert shows in text_of(hostile)


@pytest.fixture
def ctx(tmp_path):
    c = Context.open(Settings.from_env({"TUNESTUDIO_HOME": str(tmp_path / "home")}))
    yield c
    c.close()


def preview(value: str) -> DataPreview:
    return DataPreview(dataset_ref="dataset:1", name=value, fmt="csv", rows=3, columns=["text", value],
                       shape="classification", confidence=0.9, mapping={"text": "text", "label": value},
                       roles=["text", "label"], ignored_columns=[value], head=[{"text": "a", value: value}],
                       stats={"rows": 3, "label_balance": {value: 2, "other": 1}}, problem=value)


def test_the_data_steps_status_and_statistics():
    same_elements(lambda v: data_step.render_preview(preview(v))["data.status"])
    same_elements(lambda v: data_step.render_preview(preview(v))["data.stats"])
    same_elements(data_step.error_box)
    same_elements(lambda v: data_step.upload_shown(None, v)["data.status"])


def model(value: str, config=None) -> ModelInfo:
    return ModelInfo(name=value, architecture=value, model_type=value, tasks=("CAUSAL_LM",),
                     shape=ModelShape(1000, 800, 16, 2, 2, 100), config=config, description=value)


def test_the_model_check_and_the_trainable_count():
    same_elements(lambda v: model_step.info_markdown(model(v)))
    same_elements(model_step.error_box)
    llama = config_for("llama")
    same_elements(lambda v: method_step.count_text(model(v, llama), "LORA", {"r": 2, "target_modules": "attention"},
                                                   "CAUSAL_LM")["method.count"])
    same_elements(lambda v: method_step.count_text(model("m", llama), "LORA", {"target_modules": v},
                                                   "CAUSAL_LM")["method.count"],
                  shows="['<img', 'src=http://127.0.0.1:9/x', 'onerror=alert(1)>', '[click](http://example.com)'")
    gpu = SimpleNamespace(kind="gpu", name=HOSTILE, total_bytes=2**34, available_bytes=2**33)
    same_elements(lambda v: model_step.fit_text(2**30, SimpleNamespace(**{**vars(gpu), "name": v})))


def test_the_run_view_header_link_and_messages(ctx):
    def header(value: str) -> str:
        spec = {"name": value, "model": {"name": value}, "data": {"dataset": value}, "method": {"peft_type": "LORA"},
                "training": {}}
        with ctx.session() as s:
            run = Run(name=value, status="failed", spec=spec, model=value, method="LORA", error=value)
            s.add(run)
            s.commit()
            run_id = run.id
        return run_view.draw(ctx, run_id, None)["run.header"]

    same_elements(header, render=lambda x: x)  # gr.HTML: raw HTML, no Markdown
    same_elements(lambda v: run_view.linked_run(ctx, v)[1])
    same_elements(playground_tab._error)
