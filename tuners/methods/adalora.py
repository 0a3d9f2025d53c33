"""AdaLoRA: an SVD-shaped low-rank update whose rank budget is reallocated during training
(peft_type ``ADALORA``; Zhang et al., 2023).

    ΔW = P Λ Q · alpha / (init_r + 1e-5)        P = lora_B (out × r), Λ = diag(lora_E) (r × 1),
                                                Q = lora_A (r × in), r = init_r

Λ starts at zero (so ΔW does), P and Q ~ N(0, 0.02). Two things make it adaptive:

- an orthogonality regulariser, ``orth_reg_weight`` · mean over layers of ‖QQᵀ − I‖_F and ‖PᵀP − I‖_F,
  which the training loop adds to the loss (:func:`orthogonal_penalty`, the Method's ``loss_term``);
- a rank budget (:func:`update_and_allocate`, the Method's ``after_backward``, called each step after
  ``optimizer.step()`` and before ``zero_grad()``): the importance of each triplet (Pᵢ, λᵢ, Qᵢ) is
  |p · ∂L/∂p| smoothed by an EMA (β1) times the EMA (β2) of its deviation, summed over the triplet;
  every ``deltaT`` steps between ``tinit`` and ``total_step − tfinal`` the least important λᵢ are
  zeroed so that the number of kept triplets follows a cubic schedule from ``init_r`` to ``target_r``
  per layer on average; afterwards the final pattern is kept fixed.

The kept triplets are recorded in the config's ``rank_pattern`` ({"<module>.lora_E": [bool] * init_r}).
In memory every layer keeps all ``init_r`` triplets (masked ones have λ = 0); on disk, as peft writes
it, the masked ones are dropped, and they are restored as zeros when an adapter is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from tuners.config import AdapterConfig, ConfigError, default_field
from tuners.inject import wraps_conv1d
from tuners.method import Method
from tuners.methods.delta_weight import DeltaWeightLayer, inject_delta_layers

if TYPE_CHECKING:
    from tuners.model import TunedModel

KEY_PREFIX = "base_model.model."
TRIPLET = ("lora_A", "lora_B", "lora_E")


@dataclass
class AdaloraConfig(AdapterConfig):
    peft_type = "ADALORA"

    init_r: int = default_field(12, "Rank every layer starts with.")
    target_r: int = default_field(
        8, "Average rank per layer left when the budget schedule ends (at or above init_r nothing is pruned)."
    )
    lora_alpha: float = default_field(8, "Scale numerator: the update is multiplied by alpha / init_r.")
    lora_dropout: float = default_field(0.0, "Dropout on the adapter's input during training.")
    total_step: int | None = default_field(
        None, "Total training steps the budget schedule is laid out over; empty = the run's length."
    )
    tinit: int = default_field(0, "Warm-up steps at the full rank before any rank is pruned.")
    tfinal: int = default_field(0, "Final steps trained with the rank pattern fixed.")
    deltaT: int = default_field(1, "Reallocate the rank budget every this many steps.")
    beta1: float = default_field(0.85, "EMA factor of the importance (sensitivity) estimate.")
    beta2: float = default_field(0.85, "EMA factor of the importance's uncertainty estimate.")
    orth_reg_weight: float = default_field(0.5, "Weight of the orthogonality regulariser added to the loss.")
    init_lora_weights: bool = default_field(
        True, "True: singular values start at zero (the update starts at zero). False: all random (tests only)."
    )
    fan_in_fan_out: bool = default_field(False, "Set automatically for GPT-2 Conv1D targets (weight stored in × out).")
    rank_pattern: dict | None = default_field(
        None, "Written by training: the kept triplets per layer, {'<module>.lora_E': [true/false] * init_r}."
    )

    def for_run(self, total_steps: int) -> AdaloraConfig:
        return self if self.total_step is not None else self.replace(total_step=total_steps)

    def validate(self) -> None:
        super().validate()
        for name in ("init_r", "target_r", "deltaT"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name}: must be a positive integer, got {value!r}")
        if not isinstance(self.lora_alpha, int | float) or isinstance(self.lora_alpha, bool) or self.lora_alpha <= 0:
            raise ConfigError(f"lora_alpha: must be positive, got {self.lora_alpha!r}")
        if not isinstance(self.lora_dropout, int | float) or not 0.0 <= float(self.lora_dropout) < 1.0:
            raise ConfigError(f"lora_dropout: must be in [0, 1), got {self.lora_dropout!r}")
        if self.total_step is not None and (
            not isinstance(self.total_step, int) or isinstance(self.total_step, bool) or self.total_step <= 0
        ):
            raise ConfigError(
                f"total_step: the number of training steps (a positive integer), got {self.total_step!r}"
            )
        for name in ("tinit", "tfinal"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name}: must be a non-negative integer, got {value!r}")
        if self.total_step is not None and self.tinit >= self.total_step - self.tfinal:
            raise ConfigError(
                f"tinit: {self.tinit} leaves no budgeting phase before total_step - tfinal = "
                f"{self.total_step - self.tfinal}; lower tinit/tfinal or raise total_step"
            )
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0.0 < float(value) < 1.0:
                raise ConfigError(f"{name}: must be in (0, 1), got {value!r}")
        if not isinstance(self.orth_reg_weight, int | float) or self.orth_reg_weight < 0:
            raise ConfigError(f"orth_reg_weight: must be >= 0, got {self.orth_reg_weight!r}")
        if self.rank_pattern is not None:
            if not isinstance(self.rank_pattern, dict):
                raise ConfigError("rank_pattern: expected a mapping of '<module>.lora_E' to a list of booleans")
            for key, mask in self.rank_pattern.items():
                if not isinstance(mask, list) or not all(isinstance(v, bool) for v in mask):
                    raise ConfigError(f"rank_pattern[{key!r}]: expected a list of true/false, got {mask!r}")


# --------------------------------------------------------------------------- layer
class AdaloraLayer(DeltaWeightLayer):
    """SVD-form update around a linear-like base: y = W x + b + (s / (r + 1e-5)) · P (Λ ⊙ Q) dropout(x)."""

    adapter_params = TRIPLET
    adapter_extras = (*DeltaWeightLayer.adapter_extras, "ranknum", "lora_dropout", "importance")

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        self.lora_E = nn.ParameterDict()
        # The rank the scale divides by, a frozen parameter as in peft (it counts in the model's total).
        self.ranknum = nn.ParameterDict()
        self.lora_dropout = nn.ModuleDict()
        # Per adapter and per factor: (EMA of |p·grad|, EMA of its deviation), for the rank budget.
        self.importance: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}

    def add(self, name: str, module_name: str, config: AdaloraConfig) -> None:
        r, kw = config.init_r, self.factory()
        self.lora_A[name] = nn.Parameter(torch.empty(r, self.in_features, **kw))
        self.lora_E[name] = nn.Parameter(torch.empty(r, 1, **kw))
        self.lora_B[name] = nn.Parameter(torch.empty(self.out_features, r, **kw))
        self.ranknum[name] = nn.Parameter(torch.full((1,), float(r), **kw), requires_grad=False)
        self.lora_dropout[name] = nn.Dropout(config.lora_dropout) if config.lora_dropout > 0 else nn.Identity()
        self.scaling[name] = float(config.lora_alpha)
        self.set_dropouts(name, 0.0, 0.0, rescale=False)
        with torch.no_grad():
            if config.init_lora_weights:
                nn.init.zeros_(self.lora_E[name])
                nn.init.normal_(self.lora_A[name], mean=0.0, std=0.02)
                nn.init.normal_(self.lora_B[name], mean=0.0, std=0.02)
            else:
                for attr in TRIPLET:
                    nn.init.normal_(getattr(self, attr)[name])

    def scale(self, name: str) -> torch.Tensor:
        return self.scaling[name] / (self.ranknum[name] + 1e-5)

    def delta_weight(self, name: str) -> torch.Tensor:
        return self.lora_B[name] @ (self.lora_A[name] * self.lora_E[name]) * self.scale(name)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        if not self.is_active():
            return result
        name = self.active_adapter
        lora_A, lora_B, lora_E = self.lora_A[name], self.lora_B[name], self.lora_E[name]
        x = self.lora_dropout[name](x.to(lora_A.dtype))
        return result + ((x @ (lora_A * lora_E).T @ lora_B.T) * self.scale(name)).to(result.dtype)

    # ---------------------------------------------------------------- rank budget
    def update_importance(self, name: str, beta1: float, beta2: float) -> None:
        """Fold this step's |p · grad| into the EMAs (skipped for factors without a gradient)."""
        state = self.importance.setdefault(name, {})
        with torch.no_grad():
            for attr in TRIPLET:
                param = getattr(self, attr)[name]
                if param.grad is None:
                    continue
                ipt = (param * param.grad).abs()
                avg, unc = state.get(attr, (torch.zeros_like(param), torch.zeros_like(param)))
                avg = beta1 * avg + (1 - beta1) * ipt
                unc = beta2 * unc + (1 - beta2) * (ipt - avg).abs()
                state[attr] = (avg, unc)

    def triplet_scores(self, name: str) -> torch.Tensor:
        """(r,) importance of each triplet: λᵢ's score plus the mean scores of row Qᵢ and column Pᵢ."""
        state = self.importance.get(name, {})
        r = self.lora_E[name].shape[0]

        def score(attr: str) -> torch.Tensor:
            if attr not in state:
                return torch.zeros_like(getattr(self, attr)[name])
            avg, unc = state[attr]
            return avg * unc

        e = score("lora_E").view(-1)
        a = score("lora_A").mean(dim=1).view(-1)
        b = score("lora_B").mean(dim=0).view(-1)
        return (e + (a + b)).view(r)

    def keep_ranks(self, name: str, keep: torch.Tensor) -> None:
        with torch.no_grad():
            self.lora_E[name].masked_fill_(~keep.view(-1, 1).to(self.lora_E[name].device), 0.0)


# --------------------------------------------------------------------------- injection
def inject(model: nn.Module, config: AdaloraConfig, adapter_name: str) -> None:
    if config.total_step is None:
        raise ConfigError(
            "total_step: required, the number of training steps the rank budget is spread over "
            "(the studio fills it from the run's length)"
        )
    layers = inject_delta_layers(model, config, adapter_name, AdaloraLayer)
    config.fan_in_fan_out = config.fan_in_fan_out or wraps_conv1d(layers)
    if config.rank_pattern:
        layers = dict(_layers(model, adapter_name))
        for key, mask in config.rank_pattern.items():
            layer = layers.get(key.removesuffix(".lora_E"))
            if layer is not None:
                layer.keep_ranks(adapter_name, torch.tensor(mask, dtype=torch.bool))


def _layers(model: nn.Module, adapter_name: str) -> list[tuple[str, AdaloraLayer]]:
    return [
        (path, module)
        for path, module in model.named_modules()
        if isinstance(module, AdaloraLayer) and adapter_name in module.lora_A
    ]


# --------------------------------------------------------------------------- training hooks
def orthogonal_penalty(tuned: TunedModel, adapter_name: str) -> torch.Tensor:
    """orth_reg_weight · mean of ‖QQᵀ − I‖_F and ‖PᵀP − I‖_F over every adapted layer (peft's term)."""
    config = tuned.configs[adapter_name]
    terms = []
    for _, layer in _layers(tuned.model, adapter_name):
        for cov in (layer.lora_A[adapter_name] @ layer.lora_A[adapter_name].T,
                    layer.lora_B[adapter_name].T @ layer.lora_B[adapter_name]):
            eye = torch.eye(*cov.shape, dtype=cov.dtype, device=cov.device)
            terms.append(torch.linalg.matrix_norm(cov - eye, ord="fro"))
    if not terms:
        return torch.zeros(())
    return config.orth_reg_weight * torch.stack(terms).mean()


def budget_schedule(config: AdaloraConfig, step: int, init_budget: int, target_budget: int) -> tuple[int, bool]:
    """(total kept ranks, whether to re-mask now): full budget until ``tinit``, then a cubic decay to the
    target at ``total_step − tfinal``, masking every ``deltaT`` steps; the target afterwards."""
    if step <= config.tinit:
        return init_budget, False
    if step > config.total_step - config.tfinal:
        return target_budget, True
    progress = (step - config.tinit) / (config.total_step - config.tfinal - config.tinit)
    budget = int((init_budget - target_budget) * (1 - progress) ** 3 + target_budget)
    return budget, step % config.deltaT == 0


def mask_to_budget(layers: list[tuple[str, AdaloraLayer]], adapter_name: str, budget: int) -> dict | None:
    """Zero the λ of the least important triplets across all layers so ``budget`` remain (ties at the
    threshold are all masked, as in peft); returns the new rank pattern, or None if nothing is to go."""
    init_budget = sum(layer.lora_E[adapter_name].shape[0] for _, layer in layers)
    if init_budget - budget <= 0:
        return None
    scores = {path: layer.triplet_scores(adapter_name) for path, layer in layers}
    threshold = torch.kthvalue(torch.cat(list(scores.values())), k=init_budget - budget)[0].item()
    pattern = {}
    for path, layer in layers:
        keep = ~(scores[path] <= threshold)
        layer.keep_ranks(adapter_name, keep)
        pattern[f"{path}.lora_E"] = keep.tolist()
    return pattern


def update_and_allocate(tuned: TunedModel, adapter_name: str, global_step: int) -> None:
    """One step of the rank budget; call after ``optimizer.step()`` and before ``zero_grad()``."""
    config = tuned.configs[adapter_name]
    layers = _layers(tuned.model, adapter_name)
    if not layers:
        return
    final_step = config.total_step - config.tfinal
    init_budget = sum(layer.lora_E[adapter_name].shape[0] for _, layer in layers)
    target_budget = config.target_r * len(layers)
    if global_step < final_step:
        for _, layer in layers:
            layer.update_importance(adapter_name, config.beta1, config.beta2)
        budget, mask_now = budget_schedule(config, global_step, init_budget, target_budget)
        if mask_now:
            config.rank_pattern = mask_to_budget(layers, adapter_name, budget) or config.rank_pattern
    elif global_step == final_step:
        config.rank_pattern = mask_to_budget(layers, adapter_name, target_budget) or config.rank_pattern
        for _, layer in layers:
            layer.importance.pop(adapter_name, None)
    elif config.rank_pattern:
        by_path = dict(layers)
        for key, mask in config.rank_pattern.items():
            layer = by_path.get(key.removesuffix(".lora_E"))
            if layer is not None:
                layer.keep_ranks(adapter_name, torch.tensor(mask, dtype=torch.bool))


# --------------------------------------------------------------------------- on-disk layout
def _kept(config: AdaloraConfig) -> dict[str, torch.Tensor]:
    """module path -> bool mask of kept triplets, from the config's rank pattern."""
    return {
        key.removesuffix(".lora_E"): torch.tensor(mask, dtype=torch.bool)
        for key, mask in (config.rank_pattern or {}).items()
    }


def state_to_disk(tuned: TunedModel, adapter_name: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop masked triplets, as peft saves an adapter that has a rank pattern."""
    state = dict(state)
    for path, keep in _kept(tuned.configs[adapter_name]).items():
        prefix = f"{KEY_PREFIX}{path}."
        if prefix + "lora_E" not in state or bool(keep.all()):
            continue
        state[prefix + "lora_E"] = state[prefix + "lora_E"][keep].contiguous()
        state[prefix + "lora_A"] = state[prefix + "lora_A"][keep].contiguous()
        state[prefix + "lora_B"] = state[prefix + "lora_B"][:, keep].contiguous()
    return state


def state_from_disk(tuned: TunedModel, adapter_name: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Put saved triplets back at their ranks, the dropped ones as zeros (so they stay switched off)."""
    state = dict(state)
    for path, keep in _kept(tuned.configs[adapter_name]).items():
        prefix = f"{KEY_PREFIX}{path}."
        saved_e = state.get(prefix + "lora_E")
        if saved_e is None or saved_e.shape[0] == keep.numel():
            continue
        if saved_e.shape[0] != int(keep.sum()):
            raise ConfigError(
                f"rank_pattern[{path + '.lora_E'!r}]: keeps {int(keep.sum())} ranks but the file holds {saved_e.shape[0]}"
            )
        for attr, dim in (("lora_E", 0), ("lora_A", 0), ("lora_B", 1)):
            saved = state[prefix + attr]
            shape = list(saved.shape)
            shape[dim] = keep.numel()
            full = saved.new_zeros(shape)
            if dim == 0:
                full[keep] = saved
            else:
                full[:, keep] = saved
            state[prefix + attr] = full
    return state


METHOD = Method(
    peft_type="ADALORA",
    name="AdaLoRA",
    family="reparameterized",
    config_cls=AdaloraConfig,
    inject=inject,
    summary="SVD-form LoRA that moves its rank budget to the layers that matter during training; mergeable.",
    after_backward=update_and_allocate,
    loss_term=orthogonal_penalty,
    state_to_disk=state_to_disk,
    state_from_disk=state_from_disk,
    learning_rate=5e-4,
    learning_rate_range=(1e-4, 1e-3),
    default_targets="attention",
)
