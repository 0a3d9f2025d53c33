"""How a step computes, never what: compiled blocks (training.compile) and gradient checkpointing.

Compiled blocks (worker.compilation) train to the eager run's losses and adapter, on bucketed batch
lengths; a compile that fails falls back to eager and the log says why. Gradient checkpointing
(worker.recompute) gives the same loss and adapter gradients as keeping the activations, with
LoRA (dropout included: the recompute replays it) and with an additive method, running each block's
forward again in backward.
"""

from __future__ import annotations

import pytest
import torch

import worker.compilation as compilation
from app.core.spec import RunSpec, SpecError
from tests.engine.helpers import mapping_spec, save_tiny_model, write_mapping_csv
from worker import attention
from worker.engine import MemoryReporter, TrainingRecipe
from worker.packing import bucketed


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("compute")
    return root, save_tiny_model(root / "llama"), write_mapping_csv(root / "colours.csv")


def _recipe(job, name: str, method: dict | None = None, **training) -> tuple[TrainingRecipe, MemoryReporter]:
    root, llama, data = job
    spec = mapping_spec(llama, data, device="cpu", **training)
    spec["data"].update(max_length=100, val_fraction=0.0)  # no eval split: the compile trial is the train graph only
    if method is not None:
        spec["method"] = method
    reporter = MemoryReporter()
    recipe = TrainingRecipe(RunSpec.from_dict(spec), root / name, reporter, root / "models")
    recipe.setup()
    return recipe, reporter


def _adapter(recipe: TrainingRecipe) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in recipe.tuned.adapter_parameters().items() if p.requires_grad}


# ---------------------------------------------------------------------------------------------- compile
# Inductor's C++ code generation takes minutes on a small shared CPU, so the default suite compiles with
# aot_eager (dynamo's graph capture with fullgraph, AOT autograd's joint forward and backward: everything
# but inductor's kernels); `-m slow` runs the real backend too, and bench/gpu_check.py checks it on CUDA.
@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_blocks_train_to_the_eager_losses_on_bucketed_lengths(job, backend, monkeypatch):
    monkeypatch.setattr(compilation, "BACKEND", backend)
    eager, eager_log = _recipe(job, f"eager-{backend}", compile=False, max_steps=3)
    compiled, log = _recipe(job, f"compiled-{backend}", compile=True, max_steps=3)
    assert any("the model's blocks run eager: training.compile is false" in line for line in eager_log.lines)
    assert any(f"2 blocks compiled (torch.compile, {backend}" in line for line in log.lines), log.lines
    assert compiled.tuned.model.model.layers[0]._compiled_call_impl is not None
    # Compiled blocks take sdpa's block-diagonal mask, and no per-batch example boundaries reach them
    # (a loop over examples cannot be traced); eager packed runs attend per example.
    assert compiled.tuned.model.config._attn_implementation == "sdpa"
    assert eager.tuned.model.config._attn_implementation == attention.NAME
    packed = compiled._batch(range(8), compiled.train_data)
    assert "cu_seq_lens_q" in packed and "cu_seq_lens_q" not in compiled._model_inputs(packed)
    assert "cu_seq_lens_q" in eager._model_inputs(eager._batch(range(8), eager.train_data))

    widths = {compiled._batch(range(i, i + 8), compiled.train_data)["input_ids"].shape[1] for i in range(0, 48, 8)}
    assert widths <= {64, 100} and 64 in widths  # a multiple of 64, or the row width (max_length)
    assert eager._batch(range(8), eager.train_data)["input_ids"].shape[1] < 64  # eager pads to the longest row

    eager.train()
    compiled.train()
    losses = [[p.loss for p in r.points if p.split == "train"] for r in (eager_log, log)]
    assert len(losses[1]) == 3
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-2, atol=1e-2)  # within bf16 rounding
    for name, tensor in _adapter(eager).items():
        torch.testing.assert_close(_adapter(compiled)[name], tensor, rtol=1e-2, atol=1e-3)


def test_a_compile_that_fails_falls_back_to_eager_and_says_why(job, monkeypatch):
    def no_compiler(graph, example_inputs):
        raise RuntimeError("no C++ compiler on this machine")

    monkeypatch.setattr(compilation, "BACKEND", no_compiler)
    recipe, reporter = _recipe(job, "fallback", compile=True, max_steps=2)
    failed = [line for line in reporter.lines if "compiling them failed" in line]
    assert failed == ["warn speed: the model's blocks run eager: compiling them failed "
                      "(RuntimeError: no C++ compiler on this machine)"]
    assert not compilation.is_compiled(recipe.tuned)
    assert recipe.length_bucket == 1
    assert recipe.per_example_attention and recipe.tuned.model.config._attn_implementation == attention.NAME
    recipe.train()  # trains eager, as if compile were off
    eager, eager_log = _recipe(job, "fallback-eager", compile=False, max_steps=2)
    eager.train()
    assert [p.loss for p in reporter.points] == [p.loss for p in eager_log.points]


def test_auto_compiles_on_cuda_only():
    assert compilation.compile_wanted("auto", torch.device("cuda"))[0]
    wanted, why = compilation.compile_wanted("auto", torch.device("cpu"))
    assert not wanted and "Engine speed" in why
    assert compilation.compile_wanted(True, torch.device("cpu"))[0]
    assert not compilation.compile_wanted(False, torch.device("cuda"))[0]


def test_bucketed_lengths_stay_within_the_row_width():
    assert [bucketed(n, 200, 64) for n in (1, 64, 65, 130, 199, 200)] == [64, 64, 128, 192, 200, 200]
    assert bucketed(300, 200, 64) == 300  # an example longer than the rows keeps its length
    assert bucketed(37, 512, 1) == 37


# ---------------------------------------------------------------------------------------------- checkpointing
LORA_DROPOUT = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "lora_dropout": 0.1,
                "target_modules": ["q_proj", "v_proj", "up_proj", "down_proj"]}
IA3 = {"peft_type": "IA3", "target_modules": ["k_proj", "v_proj", "down_proj"], "feedforward_modules": ["down_proj"]}


@pytest.mark.parametrize("method", [LORA_DROPOUT, IA3], ids=["lora-dropout", "ia3"])
def test_gradient_checkpointing_gives_the_same_loss_and_adapter_gradients(job, method):
    results = {}
    for on in (False, True):
        recipe, reporter = _recipe(job, f"gc-{on}-{method['peft_type']}", method=method, gradient_checkpointing=on)
        batch = recipe._batch(range(8), recipe.train_data)
        calls: list[str] = []  # each block's MLP runs once per step, or again in backward to recompute
        for block in recipe.tuned.model.model.layers:
            block.mlp.forward = _counted(block.mlp.forward, calls)  # (module hooks do not fire in a recompute)
        recipe.tuned.train()  # as the loop does: dropout on, checkpointing on
        torch.manual_seed(7)
        loss = recipe.forward_backward([batch])
        grads = {k: p.grad.clone() for k, p in recipe.tuned.adapter_parameters().items() if p.requires_grad}
        results[on] = loss, grads, len(calls), reporter.lines
    (loss, grads, runs, _), (gc_loss, gc_grads, gc_runs, gc_lines) = results[False], results[True]
    assert any("memory: gradient checkpointing: each block keeps only its input" in line for line in gc_lines)
    assert (runs, gc_runs) == (2, 4)  # two blocks, recomputed in backward instead of keeping their activations
    assert gc_loss == pytest.approx(loss, rel=1e-6)
    assert grads and gc_grads.keys() == grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(gc_grads[name], grad, rtol=1e-5, atol=1e-7)


def _counted(forward, calls: list[str]):
    def counting(*args, **kwargs):
        calls.append("forward")
        return forward(*args, **kwargs)
    return counting


def test_the_spec_refuses_other_values():
    base = {"name": "x", "model": "m", "data": {"dataset": "d.csv"}, "method": {"peft_type": "LORA"}}
    with pytest.raises(SpecError, match="training.compile: must be true, false or auto, got 'yes'"):
        RunSpec.from_dict({**base, "training": {"compile": "yes"}})
    with pytest.raises(SpecError, match="training.compile"):
        RunSpec.from_dict({**base, "training": {"compile": 1}})
    with pytest.raises(SpecError, match="training.gradient_checkpointing: must be true or false"):
        RunSpec.from_dict({**base, "training": {"gradient_checkpointing": "on"}})
    spec = RunSpec.from_dict(base)
    assert spec.training.compile == "auto" and spec.training.gradient_checkpointing is False
