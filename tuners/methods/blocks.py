"""Where a transformer's blocks and sublayer outputs are, found from structure rather than name tables.

Layer-level methods (bottleneck adapters, SSF, IA3's defaults, layer freezing) need "the block list",
"the attention output projection" and "the feed-forward output projection" of Llama, GPT-2, BERT, T5
and their look-alikes. The rules:

- a *block list* is an ``nn.ModuleList`` whose children all share one class and each contain an
  attention module (a class whose name contains ``Attention``) and a linear layer; T5 has two
  (encoder and decoder stacks);
- inside a block, an *attention sublayer* is an outermost attention module; its output projection
  is the last linear-like module in it (``o_proj``, ``c_proj``, ``attention.output.dense``, ``o``);
- the *feed-forward output* is the last linear-like module of the block outside every attention
  module (``down_proj``, ``mlp.c_proj``, ``output.dense``, ``DenseReluDense.wo``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from torch import nn

from tuners.config import ConfigError
from tuners.targets import linear_dims, unwrapped

_KEY_VALUE = {"k_proj", "v_proj", "key", "value", "k", "v", "k_lin", "v_lin", "wk", "wv"}


def _is_attention(module: nn.Module) -> bool:
    return "Attention" in type(unwrapped(module)).__name__


def _linear_like(module: nn.Module) -> bool:
    return linear_dims(unwrapped(module)) is not None


def _structure(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """(name, module) pairs named as in the model before any adapter: a wrapper stands at the path of
    the module it wraps, that module's children follow under their own names, and the adapters' modules
    (``adapter_up.<name>``, ``base_layer``) never appear. So a second adapter finds the same blocks and
    sublayers as the first; the names resolve with ``get_submodule`` (a wrapper passes unknown
    attributes on to the module it wraps)."""
    yield prefix, module
    for name, child in unwrapped(module).named_children():
        yield from _structure(child, f"{prefix}.{name}" if prefix else name)


@dataclass(frozen=True)
class Block:
    """One transformer block: its full name and the full names of its sublayer modules."""

    name: str
    attention: tuple[str, ...]  # outermost attention sublayers (self, cross)
    attention_outputs: tuple[str, ...]
    ffn_output: str | None


def block_lists(model: nn.Module) -> list[str]:
    """Full names of the model's block lists (one for decoder-only/encoder models, two for T5)."""
    found = []
    for name, module in _structure(model):
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        classes = {type(child) for child in module}
        if len(classes) != 1:
            continue
        inside = [m for _, m in _structure(module[0])]
        has_attention = any(_is_attention(m) for m in inside)
        has_linear = any(_linear_like(m) for m in inside)
        if has_attention and has_linear:
            found.append(name)
    # Keep outermost lists only (a list nested in a block is part of that block).
    return [n for n in found if not any(n != o and n.startswith(o + ".") for o in found)]


def describe_block(model: nn.Module, name: str) -> Block:
    block = model.get_submodule(name)
    attention: list[str] = []
    for sub, module in _structure(block):
        if sub and _is_attention(module) and not any(sub.startswith(a + ".") for a in attention):
            attention.append(sub)
    outputs = []
    for att in attention:
        linears = [n for n, m in _structure(block.get_submodule(att)) if n and _linear_like(m)]
        if linears:
            outputs.append(f"{att}.{linears[-1]}")
    ffn = [
        n for n, m in _structure(block)
        if n and _linear_like(m) and not any(n == a or n.startswith(a + ".") for a in attention)
    ]
    prefix = f"{name}." if name else ""
    return Block(
        name=name,
        attention=tuple(prefix + a for a in attention),
        attention_outputs=tuple(prefix + o for o in outputs),
        ffn_output=prefix + ffn[-1] if ffn else None,
    )


def blocks(model: nn.Module) -> list[list[Block]]:
    """Blocks per stack, in order; raises :class:`ConfigError` when the model has no recognisable block list."""
    lists = block_lists(model)
    if not lists:
        raise ConfigError(
            f"{type(model).__name__}: found no list of transformer blocks (a ModuleList of identical "
            "modules containing attention); this method needs a transformer"
        )
    return [[describe_block(model, f"{lst}.{i}") for i in range(len(model.get_submodule(lst)))] for lst in lists]


def sublayer_outputs(model: nn.Module, where: str) -> list[str]:
    """Full names of the attention output projections and/or feed-forward output projections.

    ``where``: ``"attention"``, ``"ffn"`` or ``"both"``.
    """
    names: list[str] = []
    for stack in blocks(model):
        for block in stack:
            if where in ("attention", "both"):
                names.extend(block.attention_outputs)
            if where in ("ffn", "both") and block.ffn_output is not None:
                names.append(block.ffn_output)
    if not names:
        raise ConfigError(f"{type(model).__name__}: found no {where} output projection in its blocks")
    return names


def key_value_projections(model: nn.Module) -> list[str]:
    """Key and value projections of every attention sublayer (the fused QKV projection where there is one)."""
    names: list[str] = []
    for stack in blocks(model):
        for block in stack:
            for att in block.attention:
                module = model.get_submodule(att)
                linears = [(n, m) for n, m in _structure(module) if n and _linear_like(m)]
                kv = [n for n, _ in linears if n.rsplit(".", 1)[-1] in _KEY_VALUE]
                if not kv:
                    outputs = {o[len(att) + 1:] for o in block.attention_outputs}
                    kv = [n for n, _ in linears if n not in outputs][:1]  # fused qkv (GPT-2 c_attn)
                names.extend(f"{att}.{n}" for n in kv)
    return names
