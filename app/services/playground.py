"""Base vs tuned, side by side: a multi-turn chat for generative runs, label probabilities for
classification runs.

One TunedModel serves both columns: the base output is produced inside ``tuned.disabled()``, so the
two differ only by the adapter (base tensors a method trained in place, as BitFit or full
fine-tuning do, are swapped back to their originals there). Conversations are rendered the way the
run's training data was: chat, instruction and label-as-answer data through the chat template saved
with the adapter (the exact one training used: the model's own, or ChatML for a model without one;
an adapter saved before templates were kept falls back to that same choice), plain-text and
prompt/completion data as plain text, sequence-to-sequence sources as ``role: content`` lines.
Loaded runs are kept in a small LRU cache that a :class:`Playground` instance owns (no module-level
cache), so the second question to a run does not reload the model.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from app.core.errors import UserError
from app.core.tasks import PLAIN_TEXT_SHAPES
from app.services import runs
from app.services.context import Context

DEFAULT_MAX_NEW_TOKENS = 256
MAX_NEW_TOKENS_CAP = 2048
CACHE_SIZE = 2  # loaded runs kept: one base model each (a 135M model is about 0.5 GB in fp32)

# How a prompt reaches the model, by the shape of the data the run trained on.
CHAT, PLAIN, SOURCE = "chat", "plain", "source"


class PlaygroundError(UserError, RuntimeError):
    pass


@dataclass
class Loaded:
    run_id: int
    task: str
    tuned: Any
    tokenizer: Any
    label_names: list[str] | None
    style: str = CHAT
    # One generation at a time per model: the base column switches the adapter off in place.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)


@dataclass(frozen=True)
class SideBySide:
    base: str
    tuned: str
    prompt_text: str


@dataclass(frozen=True)
class Partial:
    """One step of a streamed answer: the text so far and how many new tokens it took."""

    text: str
    tokens: int
    seconds: float
    done: bool = False


def finished_runs(ctx: Context) -> list[tuple[str, int]]:
    """(label, id) of runs with an adapter to try, newest first."""
    return [(f"#{r.id} {r.name} ({r.method}, {r.model.rsplit('/', 1)[-1]})", r.id)
            for r in runs.list_runs(ctx, status="succeeded") if r.adapter_path]


def default_run(choices: list[tuple[str, int]], current: Any = None) -> int | None:
    """The run the playground shows: the person's pick while it is still there, else the newest
    finished run (the one just trained, and the only one when there is one)."""
    ids = [rid for _, rid in choices]
    if current not in (None, "") and int(current) in ids:
        return int(current)
    return ids[0] if ids else None


def task_of(ctx: Context, run_id: int) -> str:
    """The run's task type (the playground shows a chat for generators, label bars for classifiers)."""
    return runs.get_spec(ctx, run_id).task


def prompt_style(ctx: Context, run_id: int) -> str:
    """How the run's training rendered prompts (see the module docstring)."""
    spec = runs.get_spec(ctx, run_id)
    if spec.task == "SEQ_2_SEQ_LM":
        return SOURCE
    shape = spec.data.shape if spec.data.shape != "auto" else _detected_shape(ctx, run_id)
    return PLAIN if shape in PLAIN_TEXT_SHAPES else CHAT


def _detected_shape(ctx: Context, run_id: int) -> str | None:
    """The shape the engine detected for an ``auto`` spec: it says so in the run's log."""
    from sqlalchemy import select

    from app.registry.models import LogLine

    with ctx.session() as s:
        message = s.scalar(select(LogLine.message).where(
            LogLine.run_id == run_id, LogLine.message.like("data: detected shape %")).order_by(LogLine.id).limit(1))
    if not message:
        return None
    return message.removeprefix("data: detected shape ").split(" ", 1)[0].rsplit(".", 1)[-1].lower()


def load_run(ctx: Context, run_id: int) -> Loaded:
    import tuners
    from app.core.models import load_model, load_tokenizer, resolve_model
    from app.data.chat import saved_chat_template

    run = runs.get_run(ctx, run_id)
    if not run.adapter_path or not Path(run.adapter_path).is_dir():
        raise PlaygroundError(f"run {run_id} ({run.status}) has no adapter yet")
    spec = runs.get_spec(ctx, run_id)
    ref = resolve_model(spec.model.name, ctx.settings.models_dir)
    tokenizer = load_tokenizer(ref, spec.model.trust_remote_code)
    template = saved_chat_template(run.adapter_path)
    if template is not None:  # prompt as training rendered its data (and a merged model keeps it)
        tokenizer.chat_template = template
    task = spec.task
    label_names = _label_names(Path(run.adapter_path))
    model = load_model(ref, task, tokenizer, spec.model.trust_remote_code, label_names)
    tuned = tuners.load(model, run.adapter_path)
    tuned.eval()
    return Loaded(run_id, task, tuned, tokenizer, label_names, prompt_style(ctx, run_id))


def _label_names(folder: Path) -> list[str] | None:
    path = folder / "label_map.json"
    if not path.is_file():
        return None
    id2label = json.loads(path.read_text(encoding="utf-8")).get("id2label", {})
    return [id2label[k] for k in sorted(id2label, key=int)]


def conversation(history: list[dict] | None, prompt: str) -> list[dict]:
    """The chat so far plus the new question, as plain ``{role, content}`` turns. Chatbot history
    may carry extra keys (metadata, options) and non-text turns; only text user/assistant turns go
    to the model."""
    turns = [{"role": m["role"], "content": m["content"]} for m in history or []
             if m.get("role") in ("user", "assistant") and isinstance(m.get("content"), str)]
    return [*turns, {"role": "user", "content": prompt}]


def chat_prompt(tokenizer: Any, history: list[dict] | None, prompt: str, style: str = CHAT) -> str:
    """The conversation rendered as the run's training rendered its data, ending where the model
    should answer."""
    from app.data import render_chat

    messages = conversation(history, prompt)
    if style == PLAIN:
        return "\n".join(m["content"] for m in messages)
    if style == SOURCE:
        if len(messages) == 1:
            return prompt
        return "\n".join(f"{m['role']}: {m['content']}" for m in messages)
    return render_chat(tokenizer, messages, add_generation_prompt=True)


def prompt_text(tokenizer: Any, prompt: str) -> str:
    """A single question as the model saw chat data in training."""
    return chat_prompt(tokenizer, None, prompt)


def check_max_new_tokens(value: Any) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if not 1 <= n <= MAX_NEW_TOKENS_CAP:
        raise PlaygroundError(f"max new tokens: must be a whole number from 1 to {MAX_NEW_TOKENS_CAP}, got {value!r}")
    return n


def encode_prompt(loaded: Loaded, history: list[dict] | None, prompt: str) -> dict[str, torch.Tensor]:
    """The token ids the model is given for this conversation: the rendered chat carries its own
    special tokens (training tokenized it without adding any); plain text gets the tokenizer's."""
    text = chat_prompt(loaded.tokenizer, history, prompt, loaded.style)
    return loaded.tokenizer(text, return_tensors="pt", add_special_tokens=loaded.style != CHAT)


class _Stop:
    """Stops generation when the person leaves (the answer stream is closed)."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self, input_ids, scores, **kwargs) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool)


def _counting_streamer(*args: Any, **kwargs: Any) -> Any:
    """transformers' text streamer that also counts the new tokens it was handed."""
    from transformers import TextIteratorStreamer

    class Counting(TextIteratorStreamer):
        count = 0

        def put(self, value: torch.Tensor) -> None:
            if not (self.skip_prompt and self.next_tokens_are_prompt):
                self.count += int(value.numel())
            super().put(value)

    return Counting(*args, **kwargs)


def stream_reply(
    loaded: Loaded, history: list[dict] | None, prompt: str, *, adapter: bool, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
) -> Iterator[Partial]:
    """One column's answer, token by token (base with ``adapter=False``). Generation runs in a
    thread and hands text over as it comes, so the page shows the answer growing instead of waiting
    for the whole of it; the last item has ``done=True`` and the full decoded answer."""
    from transformers import StoppingCriteriaList

    if loaded.task == "SEQ_CLS":
        raise PlaygroundError("this run trained a classifier: use label probabilities instead")
    if not prompt or not prompt.strip():
        raise PlaygroundError("prompt: type something first")
    n = check_max_new_tokens(max_new_tokens)
    tok = loaded.tokenizer
    enc = encode_prompt(loaded, history, prompt)
    streamer = _counting_streamer(tok, skip_prompt=True, skip_special_tokens=True, timeout=600)
    stop = _Stop()
    kwargs: dict[str, Any] = {"max_new_tokens": n, "pad_token_id": tok.pad_token_id, "do_sample": temperature > 0,
                              "streamer": streamer, "stopping_criteria": StoppingCriteriaList([stop])}
    if temperature > 0:
        kwargs.update(temperature=float(temperature), top_p=float(top_p))
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            with torch.no_grad():
                torch.manual_seed(seed)
                if adapter:
                    result["out"] = loaded.tuned.generate(**enc, **kwargs)
                else:
                    with loaded.tuned.disabled():
                        result["out"] = loaded.tuned.generate(**enc, **kwargs)
        except BaseException as exc:  # handed to the caller's thread
            result["error"] = exc
            streamer.end()

    start = time.monotonic()
    with loaded.lock:
        thread = threading.Thread(target=work, name=f"playground-{loaded.run_id}", daemon=True)
        thread.start()
        try:
            text = ""
            for piece in streamer:
                if "error" in result:
                    break
                text += piece
                yield Partial(text, streamer.count, time.monotonic() - start)
        finally:
            stop.event.set()
            thread.join()
    if "error" in result:
        raise result["error"]
    out = result["out"][0]
    new = out if getattr(loaded.tuned.config, "is_encoder_decoder", False) else out[enc["input_ids"].shape[1]:]
    yield Partial(tok.decode(new, skip_special_tokens=True), _new_tokens(new, tok), time.monotonic() - start, True)


def _new_tokens(ids: torch.Tensor, tok: Any) -> int:
    special = set(tok.all_special_ids or [])
    return sum(1 for i in ids.tolist() if i not in special)


def reply(loaded: Loaded, history: list[dict] | None, prompt: str, *, adapter: bool, **kwargs: Any) -> str:
    """One column's whole answer."""
    text = ""
    for part in stream_reply(loaded, history, prompt, adapter=adapter, **kwargs):
        text = part.text
    return text


def generate(
    loaded: Loaded, prompt: str, max_new_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0,
    seed: int = 0,
) -> SideBySide:
    """One question, both columns (the CLI-style single turn)."""
    options = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    base = reply(loaded, None, prompt, adapter=False, **options)
    tuned = reply(loaded, None, prompt, adapter=True, **options)
    return SideBySide(base=base, tuned=tuned, prompt_text=chat_prompt(loaded.tokenizer, None, prompt, loaded.style))


@torch.no_grad()
def label_probabilities(loaded: Loaded, text: str) -> tuple[dict[str, float], dict[str, float]]:
    """(base, tuned) label -> probability. The base column is the model as it was before training,
    head included: a head the run added starts untrained, so the base is close to uniform and the
    difference shows what the run bought."""
    if loaded.task != "SEQ_CLS":
        raise PlaygroundError("this run is not a classifier")
    if not text or not text.strip():
        raise PlaygroundError("prompt: type or paste a text to classify first")
    enc = loaded.tokenizer(text, return_tensors="pt", truncation=True)
    names = loaded.label_names

    def probs() -> dict[str, float]:
        logits = loaded.tuned(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[0]
        p = torch.softmax(logits.float(), -1).tolist()
        return {(names[i] if names and i < len(names) else str(i)): v for i, v in enumerate(p)}

    with loaded.lock:
        with loaded.tuned.disabled():
            base = probs()
        return base, probs()


class Playground:
    """Loaded runs, least recently used dropped first, so repeated questions (and going back and
    forth between two runs) do not reload the model."""

    def __init__(self, ctx: Context, size: int = CACHE_SIZE, loader: Callable[[Context, int], Loaded] = load_run) -> None:
        self.ctx = ctx
        self.size = max(1, int(size))
        self._loader = loader
        self._loaded: OrderedDict[int, Loaded] = OrderedDict()
        self._lock = threading.Lock()

    def cached(self, run_id: int) -> bool:
        """Whether asking ``run_id`` is quick (nothing to load)."""
        with self._lock:
            return int(run_id) in self._loaded

    def get(self, run_id: int) -> Loaded:
        run_id = int(run_id)
        with self._lock:
            if run_id in self._loaded:
                self._loaded.move_to_end(run_id)
                return self._loaded[run_id]
            # Make room first: the evicted model's memory can go before the next one loads.
            while len(self._loaded) >= self.size:
                self._loaded.popitem(last=False)
            loaded = self._loader(self.ctx, run_id)
            self._loaded[run_id] = loaded
            return loaded

    def forget(self, run_id: int) -> None:
        with self._lock:
            self._loaded.pop(int(run_id), None)
