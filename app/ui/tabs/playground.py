"""Playground: base and tuned models side by side, a multi-turn chat for generative runs and label
probabilities for classification runs.

Each column keeps its own conversation (the base model's answers are what the base model said), and
answers stream in with a status line saying which model is answering and how far it got, so a slow
CPU answer is never a silent wait.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from typing import Any

import gradio as gr
from gradio.blocks import Block

from app.services import playground
from app.ui.escape import literal
from app.ui.labels import t

REDRAW_SECONDS = 0.4


# What a reply writes (respond answers for each).
REPLY = ("play.status", "play.base", "play.tuned", "play.prompt", "play.base_labels", "play.tuned_labels")
# What picking a run resets (show_for_run answers for each).
FOR_RUN = ("play.chats", "play.settings", "play.clear", "play.base", "play.tuned", "play.base_labels",
           "play.tuned_labels", "play.generate", "play.status")


def build() -> dict[str, Block]:
    """The tab's components by name: ``play.run`` (which finished run), the two chats (``play.base``,
    ``play.tuned``) and label views, ``play.prompt``, the generation settings, ``play.status``, buttons."""
    with gr.Row():
        run = gr.Dropdown([], value=None, label=t("play.run"), info=t("play.empty"), elem_id="play-run", scale=4)
        refresh = gr.Button(t("run.refresh"), scale=0, size="sm", min_width=100, elem_id="play-refresh")
    with gr.Row(equal_height=True) as chats:
        # render_markdown off: what a person or a model typed shows as typed, never as markup.
        chat = dict(height=380, render_markdown=False, sanitize_html=True, buttons=["copy", "copy_all"],
                    placeholder=t("play.chat.placeholder"))
        base = gr.Chatbot(label=t("play.base"), elem_id="play-base", **chat)
        tuned = gr.Chatbot(label=t("play.tuned"), elem_id="play-tuned", **chat)
    prompt = gr.Textbox(label=t("play.prompt"), placeholder=t("play.prompt.placeholder"), lines=2,
                        elem_id="play-prompt")
    with gr.Row():
        generate = gr.Button(t("play.generate"), variant="primary", elem_id="play-generate", scale=3)
        clear = gr.Button(t("play.clear"), elem_id="play-clear", scale=1)
    status = gr.Markdown(elem_id="play-status")
    with gr.Accordion(t("play.settings"), open=False, elem_id="play-settings") as settings, gr.Row():
        max_new_tokens = gr.Slider(1, playground.MAX_NEW_TOKENS_CAP, value=playground.DEFAULT_MAX_NEW_TOKENS, step=1,
                                   label=t("play.max_new_tokens"), info=t("play.max_new_tokens.info"),
                                   elem_id="play-max-new-tokens")
        temperature = gr.Slider(0.0, 2.0, value=0.0, step=0.05, label=t("play.temperature"),
                                elem_id="play-temperature")
        top_p = gr.Slider(0.05, 1.0, value=0.95, step=0.05, label=t("play.top_p"), elem_id="play-top-p")
    with gr.Row():
        base_labels = gr.Label(label=t("play.base"), visible=False, elem_id="play-base-labels")
        tuned_labels = gr.Label(label=t("play.tuned"), visible=False, elem_id="play-tuned-labels")
    return {"play.run": run, "play.refresh": refresh, "play.chats": chats, "play.base": base, "play.tuned": tuned,
            "play.prompt": prompt, "play.generate": generate, "play.clear": clear, "play.settings": settings,
            "play.max_new_tokens": max_new_tokens, "play.temperature": temperature, "play.top_p": top_p,
            "play.status": status, "play.base_labels": base_labels, "play.tuned_labels": tuned_labels}


def run_choices(ctx, current) -> gr.Dropdown:
    """The finished runs, with the person's pick kept and the newest one picked otherwise; the hint
    only while there is nothing to pick."""
    choices = playground.finished_runs(ctx)
    return gr.Dropdown(choices=choices, value=playground.default_run(choices, current),
                       info=t("play.picked") if choices else t("play.empty"))


def _error(exc: BaseException | str) -> str:
    return f"<div class='ts-error'>{literal(exc)}</div>"


def _bubble(role: str, text: str) -> dict[str, str]:
    """A chat message as the Chatbot shows it. The Chatbot renders HTML (sanitized) even with
    Markdown off, so text is escaped: what a person or a model wrote shows exactly as written."""
    return {"role": role, "content": html.escape(text, quote=False)}


def as_typed(history: list[dict] | None) -> list[dict]:
    """The Chatbot's messages back as the text that was typed or generated (see :func:`_bubble`)."""
    return [{**m, "content": html.unescape(m["content"])} if isinstance(m.get("content"), str) else m
            for m in history or []]


def respond(pg: playground.Playground, run_id, prompt, base_history, tuned_history, max_new_tokens, temperature,
            top_p) -> Iterator[dict[str, Any]]:
    """Streams what a reply writes (``REPLY``; what is left out stays): the base model's answer first,
    then the tuned one's, growing token by token."""
    if not run_id:
        yield {"play.status": t("play.empty")}
        return
    prompt = prompt or ""
    try:
        if not pg.cached(int(run_id)):
            yield {"play.status": t("play.status.loading", run=int(run_id))}
        loaded = pg.get(int(run_id))
        if loaded.task == "SEQ_CLS":
            yield {"play.status": t("play.status.classifying")}
            base, tuned = playground.label_probabilities(loaded, prompt)
            yield {"play.status": t("play.status.classified"), "play.base_labels": gr.update(value=base, visible=True),
                   "play.tuned_labels": gr.update(value=tuned, visible=True)}
            return
        playground.check_max_new_tokens(max_new_tokens)
        options = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
        before = {"base": list(base_history or []), "tuned": list(tuned_history or [])}
        history = {side: as_typed(turns) for side, turns in before.items()}
        shown = {side: [*turns, _bubble("user", prompt)] for side, turns in before.items()}
        done = {}
        for side, adapter in (("base", False), ("tuned", True)):
            shown[side].append(_bubble("assistant", ""))
            shown_at = -1.0
            for part in playground.stream_reply(loaded, history[side], prompt, adapter=adapter, **options):
                shown[side][-1] = _bubble("assistant", part.text)
                done[side] = part
                # A few redraws a second: one per token floods a slow browser with whole chats.
                if part.done or part.seconds - shown_at >= REDRAW_SECONDS:
                    shown_at = part.seconds
                    status = t(f"play.status.{side}", tokens=part.tokens, seconds=part.seconds)
                    yield {"play.status": status, "play.base": shown["base"], "play.tuned": shown["tuned"],
                           "play.prompt": ""}
        yield {"play.status": t("play.status.done", base=done["base"].tokens, base_s=done["base"].seconds,
                                tuned=done["tuned"].tokens, tuned_s=done["tuned"].seconds),
               "play.base": shown["base"], "play.tuned": shown["tuned"], "play.prompt": ""}
    except Exception as exc:
        # The question goes back in the box, and the chats as they were before it.
        yield {"play.status": _error(exc), "play.base": base_history or [], "play.tuned": tuned_history or [],
               "play.prompt": prompt}


def show_for_run(ctx, run_id) -> dict[str, Any]:
    """What picking a run resets (``FOR_RUN``): chat or label views for its task, and a new conversation."""
    classifier = bool(run_id) and playground.task_of(ctx, int(run_id)) == "SEQ_CLS"
    text = gr.update(visible=not classifier)
    labels = gr.update(visible=classifier, value=None)
    return {"play.chats": text, "play.settings": text, "play.clear": text, "play.base": [], "play.tuned": [],
            "play.base_labels": labels, "play.tuned_labels": labels,
            "play.generate": gr.update(value=t("play.classify") if classifier else t("play.generate")),
            "play.status": ""}


def clear() -> dict[str, Any]:
    """Both chats and the status emptied."""
    return {"play.base": [], "play.tuned": [], "play.status": ""}
