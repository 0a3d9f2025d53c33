"""Which modules an adapter attaches to.

Matching follows peft: a list entry matches a module whose full name equals it or ends with ``.entry``;
a string is a full-match regex. The shorthands ``"attention"`` and ``"all-linear"`` are resolved from
the model's module types and structure, so a new architecture in the same mould needs no table entry.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from torch import nn

from tuners.config import HEAD_NAMES, ConfigError

SHORTHANDS = ("attention", "all-linear")

# Leaf names of attention output projections and of key projections across transformer families.
_OUTPUT_PROJECTIONS = {"o_proj", "out_proj", "c_proj", "dense", "out_lin", "o", "wo", "output"}
_KEY_PROJECTIONS = {"k_proj", "key", "k_lin", "k", "wk", "k_attn"}


def linear_dims(module: nn.Module) -> tuple[int, int] | None:
    """(in_features, out_features) of a linear-like module, else None.

    Covers ``nn.Linear``, GPT-2's ``Conv1D`` (weight stored transposed) and our quantized linears.
    """
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):
        return module.weight.shape[0], module.nf
    if getattr(module, "is_quantized_linear", False):
        return module.in_features, module.out_features
    return None


def is_fan_in_fan_out(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def matches(name: str, targets: list[str] | str | None) -> bool:
    if targets is None:
        return False
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def _is_wrapper(module: nn.Module) -> bool:
    """An injected adapter layer (``tuners.layers.AdapterLayer``; duck-typed to keep this module import-free)."""
    return hasattr(module, "adapter_attrs") and "base_layer" in module._modules


def candidate_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) pairs an adapter may target: an adapter layer stands for the module it wraps, and
    its insides (``base_layer``, ``lora_A.<name>``, copies of modules-to-save) are never targets."""
    out: list[tuple[str, nn.Module]] = []
    wrappers: list[str] = []
    for name, module in model.named_modules():
        if _under(name, wrappers) and name not in wrappers:
            continue
        if _is_wrapper(module):
            wrappers.append(name)
        out.append((name, module))
    return out


def unwrapped(module: nn.Module) -> nn.Module:
    """The original module behind any number of adapter layers."""
    while _is_wrapper(module):
        module = module._modules["base_layer"]
    return module


def head_module_names(model: nn.Module) -> set[str]:
    """Full names of the output head and classification heads, which adapters never replace."""
    heads: set[str] = set()
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    output = unwrapped(output) if output is not None else None
    for name, module in candidate_modules(model):
        leaf = name.rsplit(".", 1)[-1]
        if (output is not None and unwrapped(module) is output) or leaf in HEAD_NAMES or leaf == "lm_head":
            heads.add(name)
    return heads


def _under(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _attention_blocks(model: nn.Module) -> list[str]:
    """Modules whose class is an attention implementation (LlamaAttention, GPT2Attention, T5Attention...)."""
    names = []
    for name, module in candidate_modules(model):
        cls = type(module).__name__
        if "Attention" in cls and any(linear_dims(unwrapped(child)) for child in module.children()):
            names.append(name)
    return names


def infer_targets(model: nn.Module, shorthand: str) -> list[str]:
    """Resolve a shorthand to module names.

    ``all-linear``: every linear-like layer except the heads. ``attention``: the query and value input
    projections of each attention block (the LoRA paper's choice), or the fused QKV projection where
    the model has one.
    """
    heads = head_module_names(model)
    if shorthand == "all-linear":
        chosen = [n for n, m in candidate_modules(model) if linear_dims(unwrapped(m)) and not _under(n, heads)]
    elif shorthand == "attention":
        chosen = []
        for block in _attention_blocks(model):
            for leaf, child in model.get_submodule(block).named_children():
                if (
                    linear_dims(unwrapped(child))
                    and leaf not in _OUTPUT_PROJECTIONS
                    and leaf not in _KEY_PROJECTIONS
                ):
                    chosen.append(f"{block}.{leaf}" if block else leaf)
    else:
        raise ConfigError(f"target_modules: unknown shorthand {shorthand!r}; use one of {SHORTHANDS}")
    if not chosen:
        raise ConfigError(
            f"target_modules: {shorthand!r} found no suitable layer in {type(model).__name__}; "
            "name the modules explicitly"
        )
    return _shortest_names(model, chosen)


def _shortest_names(model: nn.Module, chosen: list[str]) -> list[str]:
    """Leaf names when they select exactly ``chosen`` (readable, what peft writes); full names otherwise."""
    leaves = sorted({n.rsplit(".", 1)[-1] for n in chosen})
    selected = {n for n, _ in candidate_modules(model) if matches(n, leaves)}
    return leaves if selected == set(chosen) else sorted(chosen)


def resolve_targets(
    model: nn.Module,
    target_modules: list[str] | str | None,
    exclude_modules: list[str] | str | None = None,
    *,
    accept: Callable[[nn.Module], bool] | None = None,
) -> tuple[list[str], list[str] | str]:
    """Module names to adapt, and the ``target_modules`` value to record in the config.

    Raises :class:`ConfigError` listing the model's leaf names when nothing matches, or naming a
    matched module whose type the method cannot adapt (``accept`` returns False).
    """
    if target_modules is None:
        raise ConfigError("target_modules: required; name modules or use 'attention' / 'all-linear'")
    recorded: list[str] | str = target_modules
    inferred = isinstance(target_modules, str) and target_modules in SHORTHANDS
    if inferred:
        recorded = infer_targets(model, target_modules)
    elif isinstance(target_modules, list | tuple | set):
        recorded = sorted(target_modules) if isinstance(target_modules, set) else list(target_modules)
    heads = head_module_names(model) if inferred else set()
    names = []
    for n, m in candidate_modules(model):
        if not n or not matches(n, recorded) or matches(n, exclude_modules) or _under(n, heads):
            continue
        if accept is not None and not accept(m):
            raise ConfigError(
                f"target_modules: {n!r} is a {type(m).__name__}, which this method cannot adapt"
            )
        names.append(n)
    if not names:
        leaves = sorted({n.rsplit(".", 1)[-1] for n, m in candidate_modules(model) if linear_dims(unwrapped(m))})
        raise ConfigError(
            f"target_modules: {target_modules!r} matched no module in {type(model).__name__}; "
            f"linear layers it has: {', '.join(leaves)}"
        )
    return names, recorded
