"""Every PEFT method in ``tuners.METHODS`` on the same model, data and recipe.

    .venv/bin/python bench/methods.py                    # all registered methods
    .venv/bin/python bench/methods.py --methods LORA,LOHA --steps 40

Model: a small Llama built from a config (seed 0, biases on so BitFit has something to train) with
the bundled SmolLM2 tokenizer (49k vocabulary). Data: a learnable synthetic set, sentences
"<a> plus <b> is <c>" with number words, 72 for training and 28 held out; the loss is over all
tokens. Recipe: AdamW, one learning rate for every method except where ``LEARNING_RATES`` says,
batch 16, a fixed number of steps; each method's hooks (``loss_term``, ``after_backward``) are
called as the training engine calls them. Methods with required fields get them from
``CONFIGS``; a layer method without targets gets ``target_modules="all-linear"``.

Each method runs in its own fresh subprocess so one method's allocations cannot hide in
another's numbers. Peak memory on CPU is the process's peak resident set (VmHWM) during the
training steps minus the resident set after importing the libraries: the kernel's peak counter is
reset (``/proc/self/clear_refs``) once model, adapter, optimizer and data are ready, and children
run with a low ``MALLOC_MMAP_THRESHOLD_`` so freed tensors go back to the OS and RSS tracks live
memory. It therefore includes the frozen weights, the adapter, gradients, optimizer state and
activations. On CUDA (``--device cuda``) it is ``torch.cuda.max_memory_allocated``. Steps/s is
measured after two warm-up steps. "train MB" is the part of the peak above the resident set
once everything was ready (gradients, optimizer state, activations, transient buffers). The table is printed and written to ``bench/results/methods.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Required fields or choices a method needs to run on a causal LM; everything else stays at defaults.
CONFIGS: dict[str, dict] = {
    "LORA": {"r": 8, "lora_alpha": 16, "target_modules": "all-linear"},
    "ADALORA": {"init_r": 12, "target_r": 4, "lora_alpha": 16, "target_modules": "all-linear"},  # + total_step
    "LOHA": {"r": 4, "alpha": 8, "target_modules": "all-linear"},
    "LOKR": {"r": 4, "alpha": 8, "target_modules": "all-linear"},
}
LEARNING_RATES: dict[str, float] = {"FULL": 1e-3}
DEFAULT_LR = 5e-3
# Methods that must look at the data before training (FishMask chooses its weights by Fisher information).
PREPARE: dict[str, str] = {"FISHMASK": "estimate_mask"}
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen"]


# ----------------------------------------------------------------------------- model and data
def build_model(tokenizer):
    import torch
    import transformers

    config = transformers.LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=len(tokenizer), max_position_embeddings=128, tie_word_embeddings=False,
        attention_bias=True, mlp_bias=True, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.config._name_or_path = "bench-llama"
    return model


def build_data(tokenizer, n_train: int = 72, n_eval: int = 28):
    import random

    rng = random.Random(0)
    pairs = [(a, b) for a in range(10) for b in range(10)]
    rng.shuffle(pairs)
    texts = [f"{WORDS[a]} plus {WORDS[b]} is {WORDS[a + b]}." for a, b in pairs[: n_train + n_eval]]

    def encode(chunk):
        enc = tokenizer(chunk, return_tensors="pt", padding=True)
        labels = enc["input_ids"].clone()
        labels[enc["attention_mask"] == 0] = -100
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}

    return encode(texts[:n_train]), encode(texts[n_train:])


def batches(data: dict, size: int):
    n = data["input_ids"].shape[0]
    step = 0
    while True:
        start = (step * size) % n
        yield {k: v[start:start + size] for k, v in data.items()}
        step += 1


# ----------------------------------------------------------------------------- one method (child)
def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    gc.collect()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS


def make_config(method, steps: int):
    """The method's config for this benchmark: table entries, else defaults (+ all-linear targets if needed)."""
    from tuners import ConfigError

    fields = dict(CONFIGS.get(method.peft_type, {}))
    if method.peft_type == "ADALORA":
        fields.update(total_step=steps, tinit=steps // 10, tfinal=steps // 5)
    config = method.config_cls(task_type="CAUSAL_LM", **fields)
    try:
        config.validate()
    except ConfigError as exc:
        if str(exc).startswith("target_modules:") and config.target_modules is None:
            config = config.replace(target_modules="all-linear")
        else:
            raise
    return config


def apply_method(model, method, steps: int):
    import tuners

    config = make_config(method, steps)
    try:
        return tuners.apply(model, config)
    except tuners.ConfigError as exc:
        if str(exc).startswith("target_modules: required") and config.target_modules is None:
            return tuners.apply(model, config.replace(target_modules="all-linear"))
        raise


def eval_loss(tuned, data: dict) -> float:
    import torch

    tuned.eval()
    with torch.no_grad():
        loss = tuned(**data).loss.item()
    tuned.train()
    return loss


def run_method(peft_type: str, args: argparse.Namespace) -> dict:
    import torch

    import tuners
    from tests.support.tiny_models import tokenizer as bundled_tokenizer

    baseline_kb = _status_kb("VmRSS")
    device = torch.device(args.device)
    method = tuners.METHODS[peft_type]
    tok = bundled_tokenizer("llama")
    train_data, eval_data = build_data(tok)
    train_data = {k: v.to(device) for k, v in train_data.items()}
    eval_data = {k: v.to(device) for k, v in eval_data.items()}
    tuned = apply_method(build_model(tok).to(device), method, args.steps)
    stream = batches(train_data, args.batch)
    if peft_type in PREPARE:
        module = sys.modules[method.inject.__module__]
        getattr(module, PREPARE[peft_type])(tuned, [next(stream) for _ in range(4)])
    tuned.to(device)
    trainable, total = tuned.trainable_parameters()
    name = tuned.active_adapter
    lr = LEARNING_RATES.get(peft_type, DEFAULT_LR)
    optimizer = torch.optim.AdamW([p for p in tuned.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    first_eval = eval_loss(tuned, eval_data)
    tuned.train()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        _reset_peak()
    ready_kb = _status_kb("VmRSS")
    times = []
    for step in range(args.steps):
        start = time.perf_counter()
        loss = tuned(**next(stream)).loss
        if method.loss_term is not None:
            loss = loss + method.loss_term(tuned, name)
        loss.backward()
        optimizer.step()
        if method.after_backward is not None:
            method.after_backward(tuned, name, step)
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= 2:
            times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
        memory = "torch.cuda.max_memory_allocated"
    else:
        peak_mb = (_status_kb("VmHWM") - baseline_kb) / 1024
        memory = "peak RSS during training minus RSS after imports"
    return {
        "method": peft_type,
        "name": method.name,
        "family": method.family,
        "trainable_params": trainable,
        "total_params": total,
        "lr": lr,
        "steps_per_s": round(len(times) / sum(times), 2) if times else None,
        "peak_mb": round(peak_mb, 1),
        "ready_mb": round((ready_kb - baseline_kb) / 1024, 1) if device.type != "cuda" else None,
        "training_mb": round(peak_mb - (ready_kb - baseline_kb) / 1024, 1) if device.type != "cuda" else None,
        "memory": memory,
        "eval_loss_start": round(first_eval, 4),
        "eval_loss_final": round(eval_loss(tuned, eval_data), 4),
    }


# ----------------------------------------------------------------------------- driver (parent)
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="", help="comma-separated peft_types (default: every registered method)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "methods.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(run_method(args.child, args)))
        return

    import tuners

    names = [m for m in args.methods.split(",") if m] or list(tuners.METHODS)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0", PYTHONPATH=str(ROOT))
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    env.setdefault("HF_HUB_OFFLINE", "1")
    results = []
    for peft_type in names:
        cmd = [sys.executable, __file__, "--child", peft_type, "--steps", str(args.steps),
               "--batch", str(args.batch), "--device", args.device]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            error = (proc.stderr.strip().splitlines() or ["failed"])[-1]
            results.append({"method": peft_type, "error": error[:200]})
            print(f"{peft_type}: failed: {error[:200]}", file=sys.stderr)
            continue
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"{peft_type}: done", file=sys.stderr)

    print(f"steps={args.steps} batch={args.batch} device={args.device} cpus={os.cpu_count()} "
          f"load={os.getloadavg()[0]:.1f}")
    print(f"{'method':<16}{'family':<17}{'trainable':>11}{'steps/s':>9}{'peak MB':>9}{'train MB':>10}{'eval loss':>20}")
    for r in results:
        if "error" in r:
            print(f"{r['method']:<16}error: {r['error']}")
            continue
        loss = f"{r['eval_loss_start']:.3f} -> {r['eval_loss_final']:.3f}"
        print(f"{r['method']:<16}{r['family']:<17}{r['trainable_params']:>11,}{r['steps_per_s']:>9.2f}"
              f"{r['peak_mb']:>9.1f}{r['training_mb'] or 0:>10.1f}{loss:>20}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "steps": args.steps, "batch": args.batch, "device": args.device, "load_average": os.getloadavg()[0],
        "model": "Llama from config: hidden 64, 2 layers, 4 heads (2 kv), biases on, SmolLM2 tokenizer",
        "data": "number-word addition sentences, 72 train / 28 eval",
        "results": results,
    }, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
