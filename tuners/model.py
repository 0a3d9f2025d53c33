"""TunedModel: a base model with one or more named adapters attached.

The base model is modified in place (target layers are wrapped) and kept as ``self.model``; its
parameters are frozen except the adapters' and the ``modules_to_save`` copies. The state-dict key
of an adapter parameter on disk is ``base_model.model.<path inside the task model>.<param>`` without
the adapter name, which is peft's layout, so folders are interchangeable.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tuners.config import HEAD_NAMES, PRETRAINED_HEADS, AdapterConfig, ConfigError
from tuners.inject import Insertion, adapter_layers, insert_adapter, remove_adapter
from tuners.layers import AdapterLayer, ModulesToSave, replace_module
from tuners.method import Method
from tuners.methods import method_for
from tuners.targets import SHORTHANDS, matches

KEY_PREFIX = "base_model.model."


class TunedModel(nn.Module):
    def __init__(self, model: nn.Module, config: AdapterConfig, adapter_name: str = "default", *,
                 saved: bool = False) -> None:
        super().__init__()
        self.model = model
        self.configs: dict[str, AdapterConfig] = {}
        self.adapter_modules = nn.ModuleDict()
        self.active_adapter: str | None = None
        self._disabled = False
        # Base tensors an adapter load overwrote (BitFit biases, layer-freeze blocks, full weights), with
        # their values from before, so that ``disabled()`` can still show the untouched base.
        self._base_originals: list[tuple[nn.Parameter, torch.Tensor]] = []
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.add_adapter(adapter_name, config, saved=saved)

    # ----------------------------------------------------------------- adapters
    @property
    def method(self) -> Method:
        if self.active_adapter is None:
            raise RuntimeError("no adapter is active")
        return method_for(self.configs[self.active_adapter])

    @property
    def config(self) -> AdapterConfig:
        if self.active_adapter is None:
            raise RuntimeError("no adapter is active")
        return self.configs[self.active_adapter]

    def add_adapter(self, adapter_name: str, config: AdapterConfig, *, saved: bool = False) -> None:
        """Attach a new adapter and make it the active one. ``saved``: the config was read from a saved
        adapter, whose ``modules_to_save`` say what was trained: only the new heads peft adds on load are
        added, not the pretrained ones (a pooler a peft adapter did not train stays the base's)."""
        if adapter_name in self.configs:
            raise ConfigError(f"adapter {adapter_name!r} already exists")
        if not adapter_name or "." in adapter_name:
            raise ConfigError(f"adapter name {adapter_name!r} must be non-empty and contain no '.'")
        config.validate()
        # The caller's object is left untouched: injection records resolved targets on the copy.
        config = self._with_task_defaults(copy.deepcopy(config), saved)
        method = method_for(config)
        if method.trains_base_weights and any(getattr(m, "is_quantized_linear", False) for m in self.model.modules()):
            raise ConfigError(
                f"peft_type: {method.name} trains the base model's own weights, which a quantized base "
                "cannot do; load the model in full precision or pick an adapter method"
            )
        try:
            module = method.inject(self.model, config, adapter_name)
            if module is not None:
                self.adapter_modules[adapter_name] = module
            self._add_modules_to_save(config, adapter_name)
        except BaseException:
            self._discard(adapter_name)  # a failed add leaves the model as it was
            raise
        self.configs[adapter_name] = config
        self.set_adapter(adapter_name)

    def _discard(self, adapter_name: str) -> None:
        """Remove every trace of ``adapter_name``: its state in each layer (wrappers left without any
        adapter are unwrapped) and its model-level module."""
        remove_adapter(self.model, adapter_name)
        if adapter_name in self.adapter_modules:
            del self.adapter_modules[adapter_name]

    def _with_task_defaults(self, config: AdapterConfig, saved: bool) -> AdapterConfig:
        changes: dict[str, Any] = {}
        if config.base_model_name_or_path is None:
            changes["base_model_name_or_path"] = base_model_name(self.model)
        if config.task_type in ("SEQ_CLS", "TOKEN_CLS", "QUESTION_ANS"):
            names = [n for n, _ in self.model.named_modules() if n]
            present = {n.rsplit(".", 1)[-1] for n in names}
            # A pretrained head (the pooler) is copied only for a new adapter whose method does not train it
            # with the rest of the base (full fine-tuning does), and whose named targets leave it alone.
            copy_pretrained = not saved and not method_for(config).trains_pretrained_heads
            heads = [h for h in HEAD_NAMES if h in present and (
                h not in PRETRAINED_HEADS or (copy_pretrained and not _targeted_inside(h, names, config)))]
            extra = [h for h in heads if h not in (config.modules_to_save or [])]
            if extra:
                changes["modules_to_save"] = list(config.modules_to_save or []) + extra
        return config.replace(**changes) if changes else config

    def head_parameters(self) -> list[nn.Parameter]:
        """The trainable copies of the task heads (``HEAD_NAMES``: the classifier and the pooler it reads).
        They start untrained, unlike an adapter that starts as the identity, so the engine gives them their
        own learning rate (``training.head_learning_rate``); other copies (``lm_head``) are pretrained."""
        return [p for name, layer in self.adapter_layers()
                if isinstance(layer, ModulesToSave) and name.rsplit(".", 1)[-1] in HEAD_NAMES
                for p in layer.parameters() if p.requires_grad]

    def _add_modules_to_save(self, config: AdapterConfig, adapter_name: str) -> None:
        if not config.modules_to_save:
            return
        names = [
            n
            for n, m in self.model.named_modules()
            if n and matches(n, config.modules_to_save) and not _inside_wrapper(n, self.model)
        ]
        if not names:
            raise ConfigError(f"modules_to_save: {config.modules_to_save!r} matched no module")
        insert_adapter(self.model, config, adapter_name, _MODULES_TO_SAVE, names=names)

    def adapter_layers(self) -> Iterator[tuple[str, AdapterLayer]]:
        yield from adapter_layers(self.model)

    def set_adapter(self, adapter_name: str) -> None:
        """Make ``adapter_name`` the one used by forward; only its parameters are trainable."""
        if adapter_name not in self.configs:
            raise KeyError(f"no adapter named {adapter_name!r}; have {list(self.configs)}")
        self.active_adapter = adapter_name
        for _, layer in self.adapter_layers():
            layer.set_adapter(adapter_name)
        self._set_trainable(adapter_name)

    def delete_adapter(self, adapter_name: str) -> None:
        if adapter_name not in self.configs:
            raise KeyError(f"no adapter named {adapter_name!r}")
        if any(adapter_name in layer.merged_adapters for _, layer in self.adapter_layers()):
            raise RuntimeError(f"adapter {adapter_name!r} is merged; unmerge it before deleting")
        self._discard(adapter_name)
        del self.configs[adapter_name]
        if self.active_adapter == adapter_name:
            self.active_adapter = None
            if self.configs:
                self.set_adapter(next(iter(self.configs)))

    def _set_trainable(self, adapter_name: str) -> None:
        """Only the adapter trains; the original of a module-to-save stays frozen even when it is saved."""
        for p in self.parameters():
            p.requires_grad_(False)
        frozen = {id(p) for _, layer in self.adapter_layers() if isinstance(layer, ModulesToSave)
                  for p in layer.base_layer.parameters()}
        for p in self.adapter_parameters(adapter_name).values():
            if id(p) not in frozen:
                p.requires_grad_(True)

    def adapter_parameters(self, adapter_name: str | None = None) -> dict[str, nn.Parameter]:
        """The adapter's trainable parameters under their on-disk (peft) keys."""
        adapter_name = adapter_name or self.active_adapter
        if adapter_name is None:
            return {}
        out: dict[str, nn.Parameter] = {}
        method = method_for(self.configs[adapter_name]) if adapter_name in self.configs else None
        prefix = method.key_prefix if method is not None else KEY_PREFIX
        for path, layer in self.adapter_layers():
            for key, param in layer.adapter_state(adapter_name).items():
                out[f"{prefix}{path}.{key}"] = param
        if adapter_name in self.adapter_modules:
            for key, param in self.adapter_modules[adapter_name].named_parameters():
                out[f"adapter_modules.{adapter_name}.{key}"] = param
        if method is not None and method.base_trainables is not None:
            wrappers = {n for n, layer in self.adapter_layers() if isinstance(layer, ModulesToSave)}
            for path, param in method.base_trainables(self.model, self.configs[adapter_name]).items():
                key = _peft_path(path, wrappers, adapter_name)
                if key is not None:
                    out[f"{KEY_PREFIX}{key}"] = param
        return out

    def trainable_parameters(self) -> tuple[int, int]:
        """(trainable, total) parameter counts, as peft's ``get_nb_trainable_parameters`` reports them."""
        trainable = total = 0
        for p in self.parameters():
            n = _numel(p)
            total += n
            if p.requires_grad:
                trainable += n
        return trainable, total

    # ----------------------------------------------------------------- running
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not self._disabled and self.active_adapter is not None and self.method.forward is not None:
            if args:
                raise TypeError(f"{self.method.name} adapters take keyword arguments only (input_ids=...)")
            return self.method.forward(self, self.active_adapter, kwargs)
        return self.model(*args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        if not self._disabled and self.active_adapter is not None and self.method.generate is not None:
            return self.method.generate(self, self.active_adapter, kwargs)
        return self.model.generate(*args, **kwargs)

    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        """Run the base model with every adapter switched off (merged adapters stay merged)."""
        layers = [layer for _, layer in self.adapter_layers()]
        before = [layer.disabled for layer in layers]
        prev = self._disabled
        for layer in layers:
            layer.disabled = True
        self._disabled = True
        if not prev:  # nested: the originals are already in place
            self._swap_base_originals()
        try:
            yield
        finally:
            if not prev:
                self._swap_base_originals()
            for layer, state in zip(layers, before):
                layer.disabled = state
            self._disabled = prev

    def _swap_base_originals(self) -> None:
        """Trade the loaded base tensors for the originals and back (storage swap, no copy)."""
        for i, (param, original) in enumerate(self._base_originals):
            loaded = param.data
            param.data = original
            self._base_originals[i] = (param, loaded)

    # ----------------------------------------------------------------- merging
    def merge(self, adapter_name: str | None = None) -> None:
        """Fold the adapter into the base weights (faster inference; undo with :meth:`unmerge`)."""
        adapter_name = adapter_name or self.active_adapter
        if adapter_name is None:
            raise RuntimeError("no adapter to merge")
        if adapter_name in self.adapter_modules:
            raise NotImplementedError(f"{method_for(self.configs[adapter_name]).name} cannot be merged")
        for _, layer in self.adapter_layers():
            if adapter_name in layer.adapter_names and not isinstance(layer, ModulesToSave):
                layer.merge(adapter_name)

    def unmerge(self) -> None:
        for _, layer in self.adapter_layers():
            if layer.merged_adapters:
                layer.unmerge()

    def merge_and_unload(self) -> nn.Module:
        """Merge the active adapter and return the plain base model with no wrapper layers."""
        self.merge()
        for name, layer in list(self.adapter_layers()):
            if isinstance(layer, ModulesToSave) and layer.active_adapter is not None:
                replacement = layer.modules_to_save[layer.active_adapter]
            else:
                replacement = layer.base_layer
            replace_module(self.model, name, replacement)
        for p in self.model.parameters():
            p.requires_grad_(False)
        return self.model

    # ----------------------------------------------------------------- saving
    def adapter_state_dict(self, adapter_name: str | None = None) -> dict[str, torch.Tensor]:
        """Tensors to write for the adapter, under peft's keys (clones: safetensors refuses shared storage)."""
        adapter_name = adapter_name or self.active_adapter
        if adapter_name is None:
            raise RuntimeError("no adapter to save")
        method = method_for(self.configs[adapter_name])
        state = {
            k: v.detach().clone().contiguous()
            for k, v in self.adapter_parameters(adapter_name).items()
            if not k.startswith("adapter_modules.")
        }
        if adapter_name in self.adapter_modules:
            module = self.adapter_modules[adapter_name]
            if method.export_state is not None:
                exported = method.export_state(module)
            else:
                exported = {k: v for k, v in module.state_dict().items()}
            state.update({k: v.detach().clone().contiguous() for k, v in exported.items()})
        if method.state_to_disk is not None:
            state = method.state_to_disk(self, adapter_name, state)
        return state

    def load_adapter_state(self, state: dict[str, torch.Tensor], adapter_name: str | None = None) -> None:
        """Copy saved tensors into the adapter; every key must match (no silent no-op adapters)."""
        adapter_name = adapter_name or self.active_adapter
        if adapter_name is None:
            raise RuntimeError("no adapter to load into")
        method = method_for(self.configs[adapter_name])
        if method.state_from_disk is not None:
            state = method.state_from_disk(self, adapter_name, state)
        params = {k: p for k, p in self.adapter_parameters(adapter_name).items() if not k.startswith("adapter_modules.")}
        module_keys = set()
        if adapter_name in self.adapter_modules:
            module = self.adapter_modules[adapter_name]
            module_state = {k: v for k, v in state.items() if k not in params}
            module_keys = set(module_state)
            if method.import_state is not None:
                method.import_state(module, module_state)
            else:
                module.load_state_dict(module_state)
        missing = sorted(set(params) - set(state))
        unexpected = sorted(set(state) - set(params) - module_keys)
        embeddings = self._saved_embedding_layers(unexpected)
        unexpected = [k for k in unexpected if k not in embeddings and not self._is_copy_duplicate(k)]
        if missing or unexpected:
            raise AdapterLoadError(missing, unexpected)
        base_params = self._base_trainables(adapter_name)
        kept = {id(p) for p, _ in self._base_originals}
        with torch.no_grad():
            for key, param in params.items():
                value = state[key]
                if value.shape != param.shape:
                    raise AdapterLoadError([], [], f"{key}: saved shape {tuple(value.shape)} != {tuple(param.shape)}")
                if id(param) in base_params and id(param) not in kept:
                    self._base_originals.append((param, param.detach().clone()))
                    kept.add(id(param))
                param.copy_(value.to(param.dtype))
            for key, param in embeddings.items():
                if state[key].shape != param.shape:
                    raise AdapterLoadError(
                        [], [], f"{key}: saved embedding {tuple(state[key].shape)} != model's "
                        f"{tuple(param.shape)}; resize the model's token embeddings to the adapter's vocabulary"
                    )
                param.copy_(state[key].to(param.dtype))

    def _base_trainables(self, adapter_name: str) -> set[int]:
        method = method_for(self.configs[adapter_name])
        if method.base_trainables is None:
            return set()
        return {id(p) for p in method.base_trainables(self.model, self.configs[adapter_name]).values()}

    def _is_copy_duplicate(self, key: str) -> bool:
        """peft (bias="all") also writes a module-to-save copy's bias as ``<module>.modules_to_save.bias``, a
        duplicate of ``<module>.bias`` that peft itself drops on load; so do we."""
        path = key.removeprefix(KEY_PREFIX)
        wrapper, sep, _ = path.partition(".modules_to_save.")
        if not sep:
            return False
        try:
            return isinstance(self.model.get_submodule(wrapper), ModulesToSave)
        except AttributeError:
            return False

    def _saved_embedding_layers(self, keys: list[str]) -> dict[str, nn.Parameter]:
        """Full embedding / output-embedding weights that peft saves beside the adapter (``save_embedding_layers``,
        e.g. after new tokens were added): keys naming such a base parameter are loaded into the base."""
        output = self.model.get_output_embeddings() if hasattr(self.model, "get_output_embeddings") else None
        found: dict[str, nn.Parameter] = {}
        for key in keys:
            path = key.removeprefix(KEY_PREFIX)
            owner_path, _, pname = path.rpartition(".")
            try:
                owner = self.model.get_submodule(owner_path)
            except AttributeError:
                continue
            if pname == "weight" and (isinstance(owner, nn.Embedding) or (output is not None and owner is output)):
                found[key] = owner.weight
        return found

    def save_pretrained(
        self, path: str | Path, adapter_name: str | None = None, extra_files: dict[str, str] | None = None,
        card_notes: dict[str, str] | None = None,
    ) -> Path:
        """Write the adapter folder (peft layout + model card + any ``extra_files`` such as the run config);
        ``card_notes`` (title -> Markdown) are sections of the caller's own in the model card."""
        from tuners.io import save_adapter

        adapter_name = adapter_name or self.active_adapter
        if adapter_name is None:
            raise RuntimeError("no adapter to save")
        return save_adapter(self, adapter_name, Path(path), extra_files or {}, card_notes)

    def load_adapter(self, path: str | Path, adapter_name: str, is_trainable: bool = False) -> None:
        from tuners.io import read_adapter

        config, state = read_adapter(Path(path))
        self.add_adapter(adapter_name, config, saved=True)
        self.load_adapter_state(state, adapter_name)
        if not is_trainable:
            for p in self.parameters():
                p.requires_grad_(False)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("model"), name)


# Modules trained whole (classification heads): one deep copy per adapter, through the one insertion routine.
_MODULES_TO_SAVE = Insertion(
    wrappers=(ModulesToSave,),
    wrap=lambda module, name: ModulesToSave(module),
    add=lambda layer, adapter_name, name: layer.add(adapter_name),
)


class AdapterLoadError(RuntimeError):
    def __init__(self, missing: list[str], unexpected: list[str], detail: str = "") -> None:
        self.missing, self.unexpected = missing, unexpected
        parts = [detail] if detail else []
        if missing:
            parts.append(f"missing keys: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected keys: {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}")
        super().__init__("adapter does not fit this model: " + "; ".join(parts))


def base_model_name(model: nn.Module) -> str | None:
    config = getattr(model, "config", None)
    return getattr(config, "_name_or_path", None) or getattr(model, "name_or_path", None) or None


def _peft_path(path: str, wrappers: set[str], adapter_name: str) -> str | None:
    """peft's name for a base-model parameter path. Inside a module-to-save peft calls the original
    ``original_module``; the copies are saved by the wrapper itself under the module's path (None here)."""
    for wrapper in wrappers:
        if not path.startswith(wrapper + "."):
            continue
        rest = path[len(wrapper) + 1 :]
        if rest.startswith("base_layer."):
            return f"{wrapper}.original_module.{rest.removeprefix('base_layer.')}"
        # The copy's parameters are saved under the module's own path already (see ModulesToSave).
        return None
    return path


def _targeted_inside(head: str, names: list[str], config: AdapterConfig) -> bool:
    """Whether the method's own named targets (not a shorthand, which leaves heads alone) reach inside
    the modules named ``head``."""
    targets = getattr(config, "target_modules", None)
    if not isinstance(targets, list | str) or targets in SHORTHANDS:
        return False
    return any(matches(n, targets) for n in names if f".{head}." in f".{n}")


def _inside_wrapper(name: str, model: nn.Module) -> bool:
    parts = name.split(".")
    for i in range(1, len(parts)):
        if isinstance(model.get_submodule(".".join(parts[:i])), AdapterLayer):
            return True
    return False


def _numel(p: torch.Tensor) -> int:
    # Packed 4-bit weights count two parameters per byte, as bitsandbytes/peft report them.
    return p.numel() * 2 if getattr(p, "packed_4bit", False) else p.numel()
