"""Values from data or a person render as their own text in Markdown and HTML: no tag, link, image,
emphasis, heading or autolink made from them (rendered here by markdown-it, a CommonMark parser with
HTML on; the browser test renders them with Gradio's own Markdown)."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

import pytest
from markdown_it import MarkdownIt

from app.ui.escape import literal

HOSTILE = [
    "<img src=http://127.0.0.1:9/x onerror=alert(1)>",
    "[click](http://example.com)",
    "![x](http://127.0.0.1:9/x.png)",
    "**bold** and __bold__ and *it* and _it_",
    "<b>column</b>",
    "<script>alert(1)</script>",
    "`code` and ```fence```",
    "<http://example.com>",
    "http://example.com/bare and www.example.com and someone@example.com",
    "$$x^2$$ and ~~struck~~",
    "first line\n\n# heading\n\n> quote\n\n- item\n1. item\n| a | b |\n|---|---|",
    'quotes " and \' and & and &amp; and &#91;',
    r"\[not a link\](x) \\ back\slash",
    "日本語 — ünïcödé → stays",
]


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)


def tags_in(rendered: str) -> list[str]:
    parser = Tags()
    parser.feed(rendered)
    return parser.tags


def text_of(rendered: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", rendered)).strip()


@pytest.mark.parametrize("value", HOSTILE)
def test_markdown_shows_the_value_as_text_and_makes_nothing_of_it(value):
    md = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    rendered = md.render(f"Label: {literal(value)}")
    assert tags_in(rendered) == ["p"], rendered
    assert text_of(rendered) == f"Label: {value}"


@pytest.mark.parametrize("value", HOSTILE)
def test_inside_html_the_value_is_text_too(value):
    rendered = f"<div class='ts-error'>{literal(value)}</div>"
    assert tags_in(rendered) == ["div"]
    assert html.unescape(rendered) == f"<div class='ts-error'>{value}</div>"


def test_what_autolinks_and_maths_need_is_gone_and_words_stay_readable():
    out = re.sub(r"&#\d+;", "", literal("see http://x.org, www.x.org, a@x.org, $$1$$ ok #1 | \n"))
    assert out == "see httpxorg wwwxorg axorg 1 ok 1  "
    for syntax in (":", ".", "@", "$", "<", "[", "(", "!", "*", "_", "`", "~", "#", "|", "\n"):
        assert syntax not in out
    assert literal("plain words 42 ünï") == "plain words 42 ünï"
    assert literal(3) == "3"
