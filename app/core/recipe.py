"""A run's recipe in one line, from its spec: method and variant, base precision, key numbers.

The run header, the runs table and the run picker all name a run by this text, so a DoRA run on an
NF4 base says so everywhere instead of "LORA" (issue 11, item 5). It reads only the spec dict
stored with the run, so runs made before a method gained a field still describe themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.core.spec import RunSpec


def _method_name(peft_type: str) -> str:
    import tuners

    method = tuners.METHODS.get(peft_type)
    return method.name if method is not None else peft_type


def _variant(peft_type: str, m: Mapping[str, Any]) -> str:
    """What makes this run differ from the method's plain form (DoRA, rsLoRA, an adapter layout)."""
    parts = []
    if peft_type in ("LORA", "UNIPELT"):
        if m.get("use_dora"):
            parts.append("DoRA")
        if m.get("use_rslora"):
            parts.append("rsLoRA")
    if peft_type == "BOTTLENECK" and m.get("variant"):
        parts.append(str(m["variant"]))
    if peft_type == "P_TUNING" and m.get("encoder_reparameterization_type"):
        parts.append(f"{m['encoder_reparameterization_type']} encoder")
    if peft_type == "PREFIX_TUNING" and m.get("prefix_projection"):
        parts.append("projected")
    if peft_type == "PROMPT_TUNING" and str(m.get("prompt_tuning_init", "")).upper() == "TEXT":
        parts.append("text init")
    return " + ".join(parts)


def _num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _numbers(peft_type: str, m: Mapping[str, Any]) -> list[str]:
    """The method's few settings a person compares runs by (rank, scale, size), in its own terms."""
    out: list[str] = []

    def add(label: str, key: str) -> None:
        if m.get(key) is not None:
            out.append(f"{label} {_num(m[key])}")

    if peft_type == "ADALORA":
        if m.get("init_r") is not None and m.get("target_r") is not None:
            out.append(f"r {m['init_r']}→{m['target_r']}")
        add("alpha", "lora_alpha")
    elif peft_type in ("LORA", "UNIPELT"):
        add("r", "r")
        add("alpha", "lora_alpha")
    elif peft_type in ("LOHA", "LOKR"):
        add("r", "r")
        add("alpha", "alpha")
    if peft_type in ("PROMPT_TUNING", "PREFIX_TUNING", "P_TUNING", "UNIPELT"):
        add("virtual tokens", "num_virtual_tokens")
    if peft_type == "BOTTLENECK":
        if m.get("bottleneck_size"):
            add("size", "bottleneck_size")
        else:
            add("reduction", "reduction_factor")
    if peft_type == "FISHMASK":
        add("density", "density")
    if peft_type == "LAYER_FREEZE":
        add("trainable layers", "num_trainable_layers")
    if peft_type == "ADAPTION_PROMPT":
        add("length", "adapter_len")
        add("layers", "adapter_layers")
    return out


def _precision(model: Mapping[str, Any], training: Mapping[str, Any]) -> str:
    precision = str(model.get("precision", "full"))
    if precision == "nf4":
        base = "NF4 + double quant" if model.get("double_quant", True) else "NF4"
    elif precision == "int8":
        base = "int8"
    else:
        base = "full-precision base"
    bf16 = training.get("bf16", "auto")
    compute = "bf16" if bf16 is True else "fp32" if bf16 is False else "bf16 where supported"
    return f"{base}, {compute}"


def _lr(value: float) -> str:
    """2e-4, 1.5e-4, 0.01 -> 1e-2: short and exact to three digits, as people write learning rates."""
    mantissa, exponent = f"{value:.2e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def _schedule(training: Mapping[str, Any]) -> list[str]:
    out = []
    lr = training.get("learning_rate")
    if lr is not None:
        out.append(f"lr {_lr(float(lr))}")
    if training.get("max_steps"):
        out.append(f"{training['max_steps']} steps")
    elif training.get("epochs") is not None:
        epochs = _num(training["epochs"])
        out.append(f"{epochs} epoch{'' if epochs == '1' else 's'}")
    batch, accum = training.get("batch_size"), training.get("grad_accum") or 1
    if batch:
        out.append(f"batch {batch}" + (f"×{accum}" if accum > 1 else ""))
    return out


def _as_dict(spec: RunSpec | Mapping[str, Any]) -> Mapping[str, Any]:
    return spec.to_dict() if isinstance(spec, RunSpec) else spec


def method_label(spec: RunSpec | Mapping[str, Any]) -> str:
    """The method with its variant and the base's quantization: "LoRA + DoRA, NF4 + double quant"."""
    d = _as_dict(spec)
    m = d.get("method") or {}
    peft_type = str(m.get("peft_type", "?"))
    variant = _variant(peft_type, m)
    label = _method_name(peft_type) + (f" ({variant})" if variant else "")
    precision = str((d.get("model") or {}).get("precision", "full"))
    if precision != "full":
        label += f", {_precision(d.get('model') or {}, {}).split(',')[0]}"
    return label


def recipe(spec: RunSpec | Mapping[str, Any]) -> str:
    """The whole recipe: "LoRA (DoRA) · r 16, alpha 32 · NF4 + double quant, bf16 where supported ·
    lr 2e-4, 30 steps, batch 8"."""
    d = _as_dict(spec)
    m = d.get("method") or {}
    peft_type = str(m.get("peft_type", "?"))
    variant = _variant(peft_type, m)
    parts = [_method_name(peft_type) + (f" ({variant})" if variant else "")]
    numbers = _numbers(peft_type, m)
    if numbers:
        parts.append(", ".join(numbers))
    parts.append(_precision(d.get("model") or {}, d.get("training") or {}))
    schedule = _schedule(d.get("training") or {})
    if schedule:
        parts.append(", ".join(schedule))
    return " · ".join(parts)
