"""The memory estimate's base weights are what the engine really holds, and a quantized run lets go of
its fp32 checkpoint.

Each run is set up by the real engine (``TrainingRecipe.setup``: load, quantize, release the
checkpoint, attach LoRA, store the frozen base for bf16) on a tiny Llama saved as safetensors, and
its frozen parameters and buffers are counted byte by byte against ``estimate.base_weight_bytes``
for the model check's shape of the same folder. bf16 storage takes the same bytes whether or not the
CPU multiplies in bf16, so where it does not the test lets the engine train in bf16 anyway
(emulated) rather than skip.
"""

from __future__ import annotations

import pytest
import torch

import app.core.devices
import worker.precision
from app.core.models import checkpoint_mappings
from app.core.options import QUANTIZATIONS
from app.core.spec import RunSpec
from app.services.estimate import base_weight_bytes, quantized_bytes, resolve_precision
from app.services.model_info import describe_model
from tests.engine.helpers import mapping_spec, save_tiny_model, write_mapping_csv
from worker.engine import MemoryReporter, TrainingRecipe


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("estimate")
    return save_tiny_model(root / "llama"), write_mapping_csv(root / "colours.csv")


def _set_up(folder, tmp_path, quantization: str, compute: str, monkeypatch) -> TrainingRecipe:
    llama, data = folder
    if compute == "bf16" and not app.core.devices.bf16_supported(torch.device("cpu")):
        monkeypatch.setattr(app.core.devices, "bf16_supported", lambda device, flags=None: True)
        monkeypatch.setattr(worker.precision, "bf16_supported", lambda device, flags=None: True)
    spec = mapping_spec(llama, data, device="cpu", bf16=compute == "bf16", max_steps=2)
    precision, double_quant = QUANTIZATIONS[quantization]  # the studio's choice, as the wizard maps it
    spec["model"].update(precision=precision, double_quant=double_quant)
    recipe = TrainingRecipe(RunSpec.from_dict(spec), tmp_path / "out", MemoryReporter(), tmp_path / "models")
    recipe.setup()
    return recipe


def _frozen_bytes(model) -> int:
    """Bytes of the parameters that do not train and of the buffers, each tensor once."""
    tensors = {id(p): p for p in model.parameters() if not p.requires_grad}
    tensors.update({id(b): b for b in model.buffers()})
    return sum(t.numel() * t.element_size() for t in tensors.values())


@pytest.mark.parametrize(("quantization", "compute"), [
    ("none", "fp32"), ("none", "bf16"), ("nf4", "fp32"), ("nf4-dq", "bf16"), ("int8", "bf16"),
])
def test_estimated_base_weights_are_the_bytes_the_engine_holds(folder, tmp_path, quantization, compute,
                                                                monkeypatch):
    recipe = _set_up(folder, tmp_path, quantization, compute, monkeypatch)
    assert recipe.bf16 == (compute == "bf16")
    shape = describe_model(str(folder[0])).shape
    held = _frozen_bytes(recipe.tuned)
    # The adapter's weights are priced apart (16 bytes each, weight, gradient and moments): only the
    # base counts here, and it matches to the byte.
    assert base_weight_bytes(shape, compute, quantization) == held
    if compute == "bf16":
        assert {p.dtype for p in recipe.tuned.parameters() if not p.requires_grad and p.is_floating_point()} \
            == {torch.bfloat16}


def test_a_quantized_run_keeps_no_fp32_checkpoint(folder, tmp_path, monkeypatch):
    llama = folder[0]
    recipe = _set_up(folder, tmp_path, "nf4-dq", "fp32", monkeypatch)
    shape = describe_model(str(llama)).shape
    # Nothing of the fp32 file is mapped any more: no tensor of the run is a view of it.
    assert not [m for m in checkpoint_mappings() if m[2].startswith(str(llama))]
    # What the model holds is the quantized linear weights plus what quantization leaves unquantized
    # (embeddings, norms, head) and nothing more: the fp32 linear weights are gone.
    unquantized = (shape.total_params - shape.linear_params) * 4
    assert _frozen_bytes(recipe.tuned) == quantized_bytes(shape.quantizable, "nf4-dq") + unquantized + shape.buffer_bytes
    fp32 = shape.total_params * 4 + shape.buffer_bytes
    assert _frozen_bytes(recipe.tuned) < fp32 - 0.8 * shape.linear_params * 4


def test_an_unquantized_fp32_run_still_reads_its_weights_from_the_file(folder, tmp_path, monkeypatch):
    """The release is for quantized runs: an fp32 run's weights are the mapped file (no copy)."""
    llama = folder[0]
    recipe = _set_up(folder, tmp_path, "none", "fp32", monkeypatch)
    assert [m for m in checkpoint_mappings() if m[2].startswith(str(llama))]
    assert recipe.tuned is not None


def test_auto_precision_is_the_engines_resolution(monkeypatch):
    from app.core.devices import pick_device, trains_in_bf16

    assert resolve_precision("auto") == ("bf16" if trains_in_bf16("auto", pick_device("auto")) else "fp32")
    assert resolve_precision("fp32") == "fp32"
