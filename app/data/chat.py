"""Conversations rendered with the model's chat template, split into prompt and response spans.

Loss masks come from rendering prefixes: the text of the conversation up to the assistant turn
(with the generation prompt) and up to the end of that turn bracket exactly the characters the model
must learn to produce. Each span is then tokenized on its own, so a label can never straddle the
boundary; templates where prefixes do not line up fall back to locating the answer text.

The template a run rendered its data with is saved next to its adapter (:func:`chat_template_files`)
and the playground prompts with that one (:func:`saved_chat_template`), not with whatever the
model's tokenizer carries by then: a model without a template of its own trains on ChatML, and a
hub model's template can change after the run.
"""

from __future__ import annotations

from pathlib import Path

from app.core.tasks import renders_chat
from app.data.errors import DataError

# ChatML, the de-facto default; the end-of-sequence token after an answer teaches the model to stop.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% if message['role'] == 'assistant' and eos_token and eos_token != '<|im_end|>' %}{{ eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

Segment = tuple[str, bool]  # (text, trained on)


# The file next to an adapter that holds the chat template its training data was rendered with.
CHAT_TEMPLATE_FILE = "chat_template.jinja"


def chat_template_for(tokenizer) -> str:
    """The template used for this tokenizer: its own, else ChatML. The engine saves it with the adapter.

    A tokenizer with several named templates renders with its default one, as transformers does."""
    own = getattr(tokenizer, "chat_template", None)
    if not own:
        return DEFAULT_CHAT_TEMPLATE
    return tokenizer.get_chat_template() if isinstance(own, dict) else own


def chat_template_files(tokenizer, task: str, shape: str) -> dict[str, str]:
    """The file to save beside the adapter of a run of ``task`` on ``shape`` data: the template it
    rendered its examples with (name -> text, as ``save_pretrained(extra_files=...)`` takes); empty
    when the run rendered no chat (plain text, classifiers, sequence-to-sequence)."""
    return {CHAT_TEMPLATE_FILE: chat_template_for(tokenizer)} if renders_chat(task, shape) else {}


def saved_chat_template(folder: str | Path) -> str | None:
    """The chat template saved with the adapter in ``folder``; None for an adapter saved without one
    (trained before templates were saved, or on data that renders no chat)."""
    path = Path(folder) / CHAT_TEMPLATE_FILE
    return path.read_text(encoding="utf-8") if path.is_file() else None


def render_chat(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    """The conversation as the model sees it; also what the playground feeds the model."""
    try:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt,
            chat_template=chat_template_for(tokenizer),
        )
    except Exception as e:  # jinja raises its own errors for conversations a template refuses
        if messages and messages[0]["role"] == "system" and len(messages) > 1:
            return render_chat(tokenizer, _fold_system(messages), add_generation_prompt)
        raise DataError(
            "chat_order", f"the model's chat template refuses this conversation ({e})",
            hint="Check the roles and their order, or pick a model whose template fits",
        ) from None


def _fold_system(messages: list[dict]) -> list[dict]:
    """Some templates (Gemma, early Mistral) reject a system role: put it in front of the first user turn."""
    system, first, *rest = messages
    return [{"role": first["role"], "content": f"{system['content']}\n\n{first['content']}"}, *rest]


def chat_segments(tokenizer, messages: list[dict]) -> list[Segment]:
    """The rendered conversation as consecutive spans; the assistant answers are the trained ones."""
    full = render_chat(tokenizer, messages)
    segments: list[Segment] = []
    cursor = 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prefix = render_chat(tokenizer, messages[:i], add_generation_prompt=True)
        # up to the last turn is the whole conversation, rendered already
        upto = full if i == len(messages) - 1 else render_chat(tokenizer, messages[: i + 1])
        if len(prefix) >= cursor and upto.startswith(prefix) and full.startswith(upto) and len(upto) > len(prefix):
            start, end = len(prefix), len(upto)
        else:
            start = full.find(message["content"], cursor)
            if start < 0:
                raise DataError(
                    "chat_order", "the model's chat template drops an assistant answer, so there is nothing to learn",
                    hint="Pick a model whose chat template keeps every assistant turn",
                )
            end = start + len(message["content"])
        segments.append((full[cursor:start], False))
        segments.append((full[start:end], True))
        cursor = end
    segments.append((full[cursor:], False))
    return [s for s in segments if s[0]]
