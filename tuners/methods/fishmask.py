"""FishMask (peft_type ``FISHMASK``, tuners only): train the weights that matter most by Fisher information.

Sung et al. (2021): estimate the diagonal (empirical) Fisher information F_i = E[(∂L/∂θ_i)²] of every
targeted weight on the user's own batches, keep the top-k entries under a parameter budget
(``density`` of the targeted weights, or ``num_parameters``), and train only those as a sparse diff:

    y = (W + D) x + b,     D = scatter(indices, values) of shape (out, in), values start at 0

so the adapter is the base model at init and the trainable count is exactly the budget. The folder
holds the diff: ``<m>.fishmask_indices`` (int64 positions in the row-major (out, in) weight) and
``<m>.fishmask_values`` (float). The mask needs data, so it is set in a second step::

    tuned = tuners.apply(model, FishMaskConfig(density=0.005))
    estimate_mask(tuned, batches)       # batches: dicts the model accepts, with labels

Until then nothing is trainable. Not mergeable through ``TunedModel.merge`` (the diff lives in a
model-level module); :func:`merge_diff` folds it into full-precision base weights.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tuners.config import AdapterConfig, ConfigError, default_field
from tuners.inject import Insertion, insert_adapter
from tuners.layers import AdapterLayer, add_to_base_weight, base_weight
from tuners.method import Method
from tuners.targets import is_fan_in_fan_out, linear_dims, resolve_targets

KEY_PREFIX = "base_model.model."


@dataclass
class FishMaskConfig(AdapterConfig):
    peft_type = "FISHMASK"

    target_modules: list[str] | str | None = default_field(
        "all-linear", "Weights eligible for the mask (names, regex, 'all-linear' or 'attention')."
    )
    density: float = default_field(0.005, "Fraction of the eligible weights to train (ignored if num_parameters).")
    num_parameters: int | None = default_field(None, "Exact number of weights to train (the budget).")
    num_batches: int = default_field(16, "Calibration batches used to estimate the Fisher information.")

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.density, int | float) or not 0.0 < float(self.density) <= 1.0:
            raise ConfigError(f"density: must be in (0, 1], got {self.density!r}")
        if self.num_parameters is not None and (not isinstance(self.num_parameters, int) or self.num_parameters <= 0):
            raise ConfigError(f"num_parameters: must be a positive integer, got {self.num_parameters!r}")
        if not isinstance(self.num_batches, int) or self.num_batches <= 0:
            raise ConfigError(f"num_batches: must be a positive integer, got {self.num_batches!r}")

    def budget(self, eligible: int) -> int:
        k = self.num_parameters if self.num_parameters is not None else round(self.density * eligible)
        return max(1, min(int(k), eligible))


class FishMaskDiff(nn.Module):
    """Every adapted weight's sparse diff for one adapter: values (trainable) and their positions."""

    def __init__(self) -> None:
        super().__init__()
        self.values = nn.ParameterDict()
        self.paths: dict[str, str] = {}  # slot -> module path

    def add(self, path: str, reference: torch.Tensor) -> str:
        slot = path.replace(".", "__")
        self.paths[slot] = path
        dtype = reference.dtype if reference.dtype in (torch.float32, torch.float64) else torch.float32
        self.values[slot] = nn.Parameter(torch.zeros(0, dtype=dtype, device=reference.device))
        self.register_buffer(f"indices_{slot}", torch.zeros(0, dtype=torch.long, device=reference.device))
        return slot

    def indices(self, slot: str) -> torch.Tensor:
        return getattr(self, f"indices_{slot}")

    def set(self, slot: str, indices: torch.Tensor, values: torch.Tensor | None = None) -> None:
        old = self.values[slot]
        indices = indices.to(device=old.device, dtype=torch.long)
        value = torch.zeros(indices.numel(), dtype=old.dtype, device=old.device) if values is None else values
        self.register_buffer(f"indices_{slot}", indices)
        self.values[slot] = nn.Parameter(value.to(old.dtype).to(old.device), requires_grad=old.requires_grad)

    def delta(self, slot: str, shape: tuple[int, int]) -> torch.Tensor:
        """The dense (out, in) diff D; differentiable in the values."""
        values = self.values[slot]
        flat = torch.zeros(shape[0] * shape[1], dtype=values.dtype, device=values.device)
        return flat.scatter(0, self.indices(slot), values).view(shape)


class FishMaskLinear(AdapterLayer):
    """y = base(x) + D x, with D the sparse diff of the active adapter (held by its FishMaskDiff)."""

    # The diffs are not submodules (the TunedModel owns them, saved under their own keys): nothing to save here.
    adapter_extras = ("_diffs",)

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.in_features, self.out_features = linear_dims(base_layer)
        self._diffs: dict[str, tuple[FishMaskDiff, str]] = {}

    def attach(self, name: str, diff: FishMaskDiff, slot: str) -> None:
        self._diffs[name] = (diff, slot)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        if not self.is_active():
            return result
        diff, slot = self._diffs[self.active_adapter]
        if diff.indices(slot).numel() == 0:
            return result
        delta = diff.delta(slot, (self.out_features, self.in_features))
        return result + F.linear(x.to(delta.dtype), delta).to(result.dtype)


def inject(model: nn.Module, config: FishMaskConfig, adapter_name: str) -> FishMaskDiff:
    diff = FishMaskDiff()
    insertion = Insertion(
        wrappers=(FishMaskLinear,),
        wrap=lambda module, name: FishMaskLinear(module),
        add=lambda layer, adapter_name, name: layer.attach(adapter_name, diff, diff.add(name, base_weight(layer.base_layer))),
    )
    insert_adapter(model, config, adapter_name, insertion)
    return diff


def export_state(diff: FishMaskDiff) -> dict[str, torch.Tensor]:
    out = {}
    for slot, path in diff.paths.items():
        out[f"{KEY_PREFIX}{path}.fishmask_indices"] = diff.indices(slot)
        out[f"{KEY_PREFIX}{path}.fishmask_values"] = diff.values[slot]
    return out


def import_state(diff: FishMaskDiff, state: dict[str, torch.Tensor]) -> None:
    expected = set(export_state(diff))
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        from tuners.model import AdapterLoadError

        raise AdapterLoadError(missing, unexpected)
    for slot, path in diff.paths.items():
        indices = state[f"{KEY_PREFIX}{path}.fishmask_indices"]
        values = state[f"{KEY_PREFIX}{path}.fishmask_values"]
        if indices.shape != values.shape:
            raise ConfigError(f"{path}: fishmask_indices {tuple(indices.shape)} != fishmask_values {tuple(values.shape)}")
        diff.set(slot, indices, values)


# --------------------------------------------------------------------------- the mask
def fisher_scores(model: nn.Module, weights: dict[str, nn.Parameter], batches: Iterable[dict[str, Any]],
                  num_batches: int) -> dict[str, torch.Tensor]:
    """Mean squared gradient of the loss per weight entry over up to ``num_batches`` batches."""
    flags = {id(p): p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    for w in weights.values():
        w.requires_grad_(True)
    scores = {k: torch.zeros_like(w, dtype=torch.float32) for k, w in weights.items()}
    seen = 0
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            if seen >= num_batches:
                break
            loss = model(**batch).loss
            if loss is None:
                raise ConfigError("num_batches: calibration batches must carry labels so the model returns a loss")
            grads = torch.autograd.grad(loss, list(weights.values()), allow_unused=True)
            for key, grad in zip(weights, grads):
                if grad is not None:
                    scores[key] += grad.detach().float() ** 2
            seen += 1
    finally:
        for p in model.parameters():
            p.requires_grad_(flags.get(id(p), False))
        model.train(was_training)
    if seen == 0:
        raise ConfigError("num_batches: no calibration batch was given")
    return {k: v / seen for k, v in scores.items()}


def top_k_mask(scores: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """Flat indices of the k highest scores across all weights (ties broken by position)."""
    keys = list(scores)
    flat = torch.cat([scores[key].reshape(-1) for key in keys])
    chosen = torch.topk(flat, k).indices
    out, start = {}, 0
    for key in keys:
        n = scores[key].numel()
        out[key] = torch.sort(chosen[(chosen >= start) & (chosen < start + n)] - start).values
        start += n
    return out


def estimate_mask(tuned_or_model: nn.Module, batches: Iterable[dict[str, Any]],
                  config: FishMaskConfig | None = None) -> dict[str, torch.Tensor]:
    """Pick the budget's most informative weights; returns {module path: flat (out, in) indices}.

    Given a TunedModel with an active FishMask adapter, the mask is installed there (its values reset
    to zero) and those values become trainable: build the optimizer after this call.
    """
    from tuners.model import TunedModel

    tuned = tuned_or_model if isinstance(tuned_or_model, TunedModel) else None
    if tuned is not None:
        config = config or tuned.config
        if not isinstance(tuned.config, FishMaskConfig):
            raise ConfigError(f"peft_type: the active adapter is {tuned.config.peft_type}, not FISHMASK")
        model = tuned.model
        layers = {n: m for n, m in model.named_modules() if isinstance(m, FishMaskLinear)}
        weights = {n: _weight_param(m.base_layer, n) for n, m in layers.items()}
    else:
        if config is None:
            raise ConfigError("estimate_mask: a FishMaskConfig is required for a plain model")
        config.validate()
        model = tuned_or_model
        names, _ = resolve_targets(model, config.target_modules, config.exclude_modules,
                                   accept=lambda m: linear_dims(m) is not None)
        weights = {n: _weight_param(model.get_submodule(n), n) for n in names}
    scores = fisher_scores(model, weights, batches, config.num_batches)
    # Conv1D stores (in, out): score in the (out, in) layout the indices use.
    scores = {n: s.T if _conv1d(model, n) else s for n, s in scores.items()}
    mask = top_k_mask(scores, config.budget(sum(s.numel() for s in scores.values())))
    if tuned is not None:
        diff = tuned.adapter_modules[tuned.active_adapter]
        for slot, path in diff.paths.items():
            diff.set(slot, mask[path])
        tuned.set_adapter(tuned.active_adapter)
    return mask


def _weight_param(module: nn.Module, name: str) -> nn.Parameter:
    weight = getattr(module, "weight", None)
    if not isinstance(weight, nn.Parameter) or not weight.is_floating_point():
        raise ConfigError(f"target_modules: {name!r} has no full-precision weight to score; FishMask needs one")
    return weight


def _conv1d(model: nn.Module, name: str) -> bool:
    module = model.get_submodule(name)
    return is_fan_in_fan_out(module.base_layer if isinstance(module, AdapterLayer) else module)


def merge_diff(tuned: nn.Module) -> None:
    """Add the active FishMask diff into the (full-precision) base weights and switch the adapter off."""
    diff = tuned.adapter_modules[tuned.active_adapter]
    for module in tuned.model.modules():
        if isinstance(module, FishMaskLinear) and tuned.active_adapter in module.adapter_names:
            _, slot = module._diffs[tuned.active_adapter]
            add_to_base_weight(module.base_layer, diff.delta(slot, (module.out_features, module.in_features)).detach())
            with torch.no_grad():
                diff.values[slot].zero_()


METHOD = Method(
    trains_base_weights=True,
    peft_type="FISHMASK",
    name="FishMask",
    family="selective",
    config_cls=FishMaskConfig,
    inject=inject,
    export_state=export_state,
    import_state=import_state,
    calibrate=lambda tuned, batches: estimate_mask(tuned, batches),
    peft_compatible=False,
    summary="Train a sparse set of weights chosen by Fisher information on your data, under a parameter budget.",
    learning_rate=3e-4,
    learning_rate_range=(1e-4, 1e-3),
    default_targets="all-linear",
)
