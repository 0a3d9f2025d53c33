"""Training in bf16 on a CPU that multiplies in it: frozen base in bf16, adapter and optimizer in fp32.

The adapter such a run saves is an ordinary fp32 adapter: loaded on the fp32 base it behaves as the
model trained (the bf16 run's own outputs, within bf16 rounding).
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

import tuners
from app.core.devices import bf16_supported
from app.core.spec import RunSpec, SpecError
from app.services.method_form import HIDDEN_FIELDS, build_config, config_values, describe_method
from tests.engine.helpers import mapping_spec, save_tiny_model, write_mapping_csv
from tests.support.tiny_models import batch, tokenizer
from worker.engine import MemoryReporter, TrainingRecipe

needs_cpu_bf16 = pytest.mark.skipif(not bf16_supported(torch.device("cpu")),
                                    reason="this CPU has neither AVX512-BF16 nor AMX")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run with ``bf16: auto`` on this CPU, trained to the end; its recipe and eval losses."""
    if not bf16_supported(torch.device("cpu")):
        pytest.skip("this CPU has neither AVX512-BF16 nor AMX")
    root = tmp_path_factory.mktemp("bf16")
    llama = save_tiny_model(root / "llama")
    spec = mapping_spec(llama, write_mapping_csv(root / "colours.csv"), device="cpu", bf16="auto")
    reporter = MemoryReporter()
    recipe = TrainingRecipe(RunSpec.from_dict(spec), root / "out", reporter, root / "models")
    recipe.setup()
    frozen_before = {p.dtype for p in recipe.tuned.parameters() if not p.requires_grad}
    result = recipe.run()
    return recipe, result, reporter, llama, frozen_before


@needs_cpu_bf16
def test_auto_stores_the_frozen_base_in_bf16_and_keeps_adapter_and_optimizer_state_in_fp32(trained):
    recipe, _, reporter, _, frozen_before = trained
    assert recipe.bf16
    assert frozen_before == {torch.bfloat16}
    assert {p.dtype for p in recipe.params} == {torch.float32}
    moments = [t for state in recipe.optimizer.state.values() for k, t in state.items() if k != "step"]
    assert moments and {t.dtype for t in moments} == {torch.float32}
    assert any("frozen base stored in bf16" in line for line in reporter.lines)


@needs_cpu_bf16
def test_the_bf16_run_learns(trained):
    _, result, reporter, _, _ = trained
    evals = [p.loss for p in reporter.points if p.split == "eval"]
    assert result.steps == 40
    assert evals[-1] < 0.35 * evals[0], evals


@needs_cpu_bf16
def test_its_adapter_on_the_fp32_base_behaves_as_the_bf16_model_trained(trained):
    recipe, result, _, llama, _ = trained
    tok = tokenizer("llama")
    prompts = [f"Q{r}: what colour is the {thing}? A:" for r, thing in ((0, "grass"), (3, "sea"), (5, "coal"))]
    base = AutoModelForCausalLM.from_pretrained(llama).eval()
    tuned = tuners.load(base, result.adapter_dir).eval()
    recipe.tuned.eval()
    for prompt in prompts:
        inputs = tok(prompt, return_tensors="pt")
        with torch.no_grad():
            fp32 = tuned(**inputs).logits[0, -1].float().log_softmax(-1)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                bf16 = recipe.tuned(**inputs).logits[0, -1].float().log_softmax(-1)
            with tuned.disabled():
                untrained = tuned(**inputs).logits[0, -1].float().log_softmax(-1)
        assert fp32.argmax() == bf16.argmax()
        top = fp32.topk(5).indices
        torch.testing.assert_close(fp32[top], bf16[top], atol=0.15, rtol=0.05)
        assert fp32.max() > untrained[fp32.argmax()] + 2.0  # the trained answer, which the base did not give


def test_bf16_true_on_a_cpu_without_avx512_bf16_or_amx_is_refused_with_the_reason(tmp_path, monkeypatch):
    import app.core.devices

    monkeypatch.setattr(app.core.devices, "cpu_flags", lambda *a, **k: frozenset({"avx2", "avx512f"}))
    spec = mapping_spec(save_tiny_model(tmp_path / "llama"), write_mapping_csv(tmp_path / "c.csv"),
                        device="cpu", bf16=True)
    recipe = TrainingRecipe(RunSpec.from_dict(spec), tmp_path / "out", MemoryReporter(), tmp_path / "models")
    with pytest.raises(SpecError, match="AVX512-BF16 nor AMX") as caught:
        recipe.setup()
    assert caught.value.path == "training.bf16"


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {family: save_tiny_model(root / family, family) for family in ("llama", "gpt2")}


@needs_cpu_bf16
@pytest.mark.parametrize("peft_type", sorted(tuners.METHODS))
def test_every_method_computes_its_adapter_on_a_bf16_base_as_on_the_fp32_one(peft_type, model_dirs, tmp_path):
    """Training in bf16 from the studio's defaults; the same adapter on the fp32 base gives the bf16 model's
    outputs (within bf16 rounding), so no layer drops or mis-scales its adapter path on a bf16 base."""
    family = "gpt2" if peft_type == "BITFIT" else "llama"  # Llama has no biases for BitFit
    form = describe_method(peft_type)
    values = {f.name: f.form_default() for f in form.fields if f.name not in HIDDEN_FIELDS}
    steps = 3 if peft_type == "ADALORA" else 1  # AdaLoRA's last step masks ranks by the importance seen before
    spec = mapping_spec(model_dirs[family], write_mapping_csv(tmp_path / "c.csv", repeats=1), max_steps=steps,
                        eval_every=0, bf16="auto", device="cpu")
    spec["method"] = {"peft_type": peft_type, **config_values(build_config(peft_type, values, task_type="CAUSAL_LM"))}
    recipe = TrainingRecipe(RunSpec.from_dict(spec), tmp_path / "out", MemoryReporter(), tmp_path / "models")
    recipe.setup()
    with torch.no_grad():  # a trained-looking adapter: every adapter path carries a visible share
        generator = torch.Generator().manual_seed(0)
        for param in recipe.params:
            spread = float(param.std()) if param.numel() > 1 else 0.0
            spread = spread or 0.5  # gates, scales and singular values start constant (zero or one)
            param.add_(torch.randn(param.shape, generator=generator) * 0.5 * spread)
    result = recipe.run()

    assert {p.dtype for p in recipe.params} == {torch.float32}
    frozen_modules = [m for m in recipe.tuned.modules()
                      if not any(p.requires_grad for p in m.parameters(recurse=False))]
    assert {p.dtype for m in frozen_modules for p in m.parameters(recurse=False)} <= {torch.bfloat16}
    inputs = batch(family)
    fp32 = tuners.load(AutoModelForCausalLM.from_pretrained(model_dirs[family]), result.adapter_dir).eval()
    recipe.tuned.eval()
    length = inputs["input_ids"].shape[1]  # soft prompts add virtual positions before the text
    with torch.no_grad():
        want = fp32(**inputs).logits[:, -length:].float().log_softmax(-1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = recipe.tuned(**inputs).logits[:, -length:].float().log_softmax(-1)
        with fp32.disabled():
            base = fp32(**inputs).logits[:, -length:].float().log_softmax(-1)
    real = inputs["attention_mask"].bool()
    error = (got - want)[real].abs().max()
    moved = (want - base)[real].abs().max()
    assert error < 0.05, (float(error), float(moved))
    assert moved > 4 * error, (float(error), float(moved))  # the comparison sees the adapter's change
