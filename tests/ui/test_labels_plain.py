"""Texts from labels.py are shown as plain text where Gradio does not render Markdown (a label, an
accordion's title), so Markdown quoting would show literally, as the issue-11 walkthrough found ("`bias`"
in a method form, "`tunestudio train spec.yaml`" on the spec preview's accordion)."""

from app.ui.labels import LABELS


def test_no_label_carries_markdown_backticks():
    assert {key: text for key, text in LABELS.items() if "`" in text} == {}
