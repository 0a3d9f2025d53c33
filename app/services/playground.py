"""Base vs tuned, side by side, for the same prompt: generation for causal LMs, label probabilities
for classification runs.

One TunedModel serves both columns: the base output is produced inside ``tuned.disabled()``, so the
two differ only by the adapter (base tensors a method trained in place, as BitFit or full
fine-tuning do, are swapped back to their originals there). Prompts go through the tokenizer's chat
template when it has one (the way chat data was trained). The last loaded run is kept in a :class:`Playground` instance the
studio owns (no module-level cache).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from app.services import runs
from app.services.context import Context


class PlaygroundError(RuntimeError):
    pass


@dataclass
class Loaded:
    run_id: int
    task: str
    tuned: Any
    tokenizer: Any
    label_names: list[str] | None


@dataclass(frozen=True)
class SideBySide:
    base: str
    tuned: str
    prompt_text: str


def finished_runs(ctx: Context) -> list[tuple[str, int]]:
    """(label, id) of runs with an adapter to try, newest first."""
    return [(f"#{r.id} {r.name} ({r.method}, {r.model.rsplit('/', 1)[-1]})", r.id)
            for r in runs.list_runs(ctx, status="succeeded") if r.adapter_path]


def task_of(ctx: Context, run_id: int) -> str:
    """The run's task type (the playground shows text for generators, label bars for classifiers)."""
    return runs.get_spec(ctx, run_id).task


def load_run(ctx: Context, run_id: int) -> Loaded:
    import tuners
    from worker.models import load_model, load_tokenizer, resolve_model

    run = runs.get_run(ctx, run_id)
    if not run.adapter_path or not Path(run.adapter_path).is_dir():
        raise PlaygroundError(f"run {run_id} ({run.status}) has no adapter yet")
    spec = runs.get_spec(ctx, run_id)
    ref = resolve_model(spec.model.name, ctx.settings.models_dir)
    tokenizer = load_tokenizer(ref, spec.model.trust_remote_code)
    task = spec.task
    label_names = _label_names(Path(run.adapter_path))
    model = load_model(ref, task, tokenizer, spec.model.trust_remote_code, label_names)
    tuned = tuners.load(model, run.adapter_path)
    tuned.eval()
    return Loaded(run_id, task, tuned, tokenizer, label_names)


def _label_names(folder: Path) -> list[str] | None:
    path = folder / "label_map.json"
    if not path.is_file():
        return None
    id2label = json.loads(path.read_text(encoding="utf-8")).get("id2label", {})
    return [id2label[k] for k in sorted(id2label, key=int)]


def prompt_text(tokenizer: Any, prompt: str) -> str:
    """The prompt as the model saw chat data in training: its chat template when there is one."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    return prompt


@torch.no_grad()
def generate(
    loaded: Loaded, prompt: str, max_new_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0,
    seed: int = 0,
) -> SideBySide:
    if loaded.task == "SEQ_CLS":
        raise PlaygroundError("this run trained a classifier: use label probabilities instead")
    if not prompt.strip():
        raise PlaygroundError("prompt: type something first")
    tok = loaded.tokenizer
    text = prompt_text(tok, prompt)
    enc = tok(text, return_tensors="pt", add_special_tokens=not getattr(tok, "chat_template", None))
    kwargs: dict[str, Any] = {
        "max_new_tokens": int(max_new_tokens), "pad_token_id": tok.pad_token_id,
        "do_sample": temperature > 0,
    }
    if temperature > 0:
        kwargs.update(temperature=float(temperature), top_p=float(top_p))

    def run() -> str:
        torch.manual_seed(seed)
        out = loaded.tuned.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], **kwargs)
        return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)

    with loaded.tuned.disabled():
        base = run()
    return SideBySide(base=base, tuned=run(), prompt_text=text)


@torch.no_grad()
def label_probabilities(loaded: Loaded, text: str) -> tuple[dict[str, float], dict[str, float]]:
    """(base, tuned) label -> probability. The base column is the model as it was before training,
    head included: a head the run added starts untrained, so the base is close to uniform and the
    difference shows what the run bought."""
    if loaded.task != "SEQ_CLS":
        raise PlaygroundError("this run is not a classifier")
    enc = loaded.tokenizer(text, return_tensors="pt", truncation=True)
    names = loaded.label_names

    def probs() -> dict[str, float]:
        logits = loaded.tuned(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[0]
        p = torch.softmax(logits.float(), -1).tolist()
        return {(names[i] if names and i < len(names) else str(i)): v for i, v in enumerate(p)}

    with loaded.tuned.disabled():
        base = probs()
    return base, probs()


class Playground:
    """Keeps the last loaded run so repeated prompts do not reload the model."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._loaded: Loaded | None = None
        self._lock = threading.Lock()

    def get(self, run_id: int) -> Loaded:
        with self._lock:
            if self._loaded is None or self._loaded.run_id != run_id:
                self._loaded = None
                self._loaded = load_run(self.ctx, run_id)
            return self._loaded
