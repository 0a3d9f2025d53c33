"""How the data pipeline scales: rows/s and peak memory to read, validate and prepare a large upload.

    .venv/bin/python bench/data_scale.py                      # 100 MB and 1 GiB (the 1 GiB case takes minutes)
    .venv/bin/python bench/data_scale.py --sizes 100MB        # one size; sizes like 20MB, 1.5GiB

Generates instruction JSON Lines (``instruction``/``input``/``output``, text drawn from a fixed
word list, seeded) of each size once under ``--work``, then measures each stage in a fresh
subprocess, so each stage's peak RSS is its own (``os.wait4``'s ``ru_maxrss`` of that process; the
sampled RSS of its whole process tree is reported beside it):

- ``baseline``: the imports and the bundled SmolLM2 fast tokenizer, nothing read (what every stage pays);
- ``ceiling``: the fast tokenizer alone on the text of the first 50,000 rows (no template, batches of
  1,000): how many rows a second this machine can tokenize at all, whatever the pipeline;
- ``read``: the reader streams the file into the Arrow rows file (``stream_table`` + ``write_rows``);
- ``validate``: shape detection and every row checked into the Arrow records file (``check_records``);
- ``prepare``: the engine's data stage, cold (``prepare_for_run`` with an empty data cache: read,
  check, de-duplicate, split, tokenize with the batched ``Dataset.map``); the tokenizing rate is its
  ``tokenize`` stage alone;
- ``again``: ``prepare_for_run`` a second time on the same cache (a cache hit; no tokenizer call).

Rows are about 415 bytes (the rows of the 83 MB / 200,000-row file measured before this pipeline:
262 s to prepare, 763 rows/s, 1.95 GB peak RSS), or longer where the reader's 1,000,000-row limit
needs it (a 1 GiB file is then about 1.1 KB a row). The table is printed and written to
``bench/results/data_scale.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BEFORE = {"rows_per_s": 763, "seconds": 262, "rows": 200_000, "mb": 83, "peak_rss_gb": 1.95}
ISSUE_ROW_BYTES = 415
GENERATOR_VERSION = 2
STAGES = ("baseline", "ceiling", "read", "validate", "prepare", "again")
CEILING_ROWS = 50_000
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
_WORDS = (
    "the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "as", "by", "at", "from", "his",
    "her", "an", "which", "or", "be", "are", "this", "had", "not", "but", "what", "all", "were", "when", "we",
    "there", "can", "more", "if", "no", "out", "so", "said", "up", "into", "time", "has", "them", "some",
    "could", "would", "two", "model", "data", "train", "learn", "answer", "question", "write", "story",
    "explain", "list", "give", "example", "why", "how", "people", "water", "world", "city", "music",
    "history", "science", "language", "number", "system", "program", "value", "result", "small", "large",
    "first", "last", "river", "mountain", "garden", "kitchen", "recipe", "travel", "weather", "market",
    "school", "family", "friend", "letter", "poem", "summary", "review", "product", "customer", "service",
    "order", "price", "delivery", "account", "password", "problem", "solution", "because", "however",
    "therefore", "although", "during", "before", "after", "between", "under", "above", "around", "through"
)


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*([\d.]+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).upper() not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 100MB or 1GiB)")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


# --- data --------------------------------------------------------------------------------------


def generate(path: Path, size: int, max_rows: int, seed: int = 0) -> dict:
    """Instruction rows until ``size`` bytes; about 1% repeat an earlier row (dedupe has work)."""
    row_bytes = max(ISSUE_ROW_BYTES, int(size / (0.9 * max_rows)) + 1)
    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file():
        info = json.loads(meta.read_text())
        if info.get("size") == size and info.get("row_bytes") == row_bytes and info.get("seed") == seed \
                and info.get("version") == GENERATOR_VERSION:
            return info
    rng = random.Random(seed)
    sentences = [" ".join(rng.choices(_WORDS, k=rng.randint(6, 18))).capitalize() + "." for _ in range(20_000)]
    chunks = [" ".join(rng.choices(sentences, k=3)) for _ in range(50_000)]  # about 250 characters each

    def text(chars: int) -> str:
        return " ".join(rng.choices(chunks, k=chars // 200 + 1))[: max(chars, 20)]

    tmp = path.with_suffix(".tmp")
    written, rows, recent = 0, 0, []
    with tmp.open("w", encoding="utf-8") as f:
        while written < size:
            if recent and rng.random() < 0.01:
                line = rng.choice(recent)
            else:
                budget = max(60, int(rng.gauss(row_bytes, row_bytes * 0.35)) - 45)  # 45: the keys and quotes
                row = {"instruction": text(budget * 3 // 10), "input": text(budget // 5) if rng.random() < 0.4 else "",
                       "output": text(budget * 62 // 100)}
                line = json.dumps(row) + "\n"
                recent = (recent + [line])[-1000:]
            if written + len(line) > size:
                break
            f.write(line)
            written += len(line)
            rows += 1
    os.replace(tmp, path)
    info = {"size": size, "bytes": written, "rows": rows, "row_bytes": row_bytes, "seed": seed,
            "version": GENERATOR_VERSION}
    meta.write_text(json.dumps(info))
    return info


# --- one stage, in its own process ------------------------------------------------------------


def run_stage(stage: str, data: Path, work: Path, tokenizer_dir: str) -> dict:
    from datasets import Dataset

    from app.core.models import load_tokenizer
    from app.core.spec import RunSpec
    from app.data.pipeline import prepare_for_run
    from app.data.readers import stream_table
    from app.data.records import check_records
    from app.data.shapes import detect_shape
    from app.data.store import StoredTable, write_rows

    tokenizer = load_tokenizer(tokenizer_dir)
    out: dict = {"stage": stage}
    started = time.perf_counter()  # imports and the tokenizer are the baseline's, not the stage's
    if stage == "ceiling":
        with data.open(encoding="utf-8") as f:
            rows = [json.loads(line) for _, line in zip(range(CEILING_ROWS), f)]
        started = time.perf_counter()
        for start in range(0, len(rows), 1000):
            tokenizer([f"{r['instruction']}\n\n{r['input']}{r['output']}" for r in rows[start : start + 1000]],
                      add_special_tokens=False)
        out["rows"] = len(rows)
    elif stage == "read":
        stored = write_rows(stream_table(data), work / "rows.arrow")
        out["rows"] = len(stored)
    elif stage == "validate":
        rows = work / "rows.arrow"
        stored = StoredTable(Dataset.from_file(str(rows)), rows, data.name, "jsonl", "utf-8",
                             ["instruction", "input", "output"])
        found = detect_shape(stored)
        records = check_records(stored, found.shape, found.mapping, work / "records.arrow")
        out["rows"] = len(records)
        out["shape"] = found.shape
    elif stage in ("prepare", "again"):
        spec = RunSpec.from_dict({
            "name": "data-scale", "model": {"name": "SmolLM2-135M-Instruct"},
            "data": {"dataset": str(data), "max_length": 512, "val_fraction": 0.1, "dedupe": True},
            "method": {"peft_type": "LORA", "target_modules": ["q_proj"]},
        })
        lines: list[str] = []
        prepared, _ = prepare_for_run(spec, tokenizer, lambda ref: Path(ref), lines.append,
                                      cache_dir=work / "cache")
        out["rows"] = prepared.stats["rows"]
        out["examples"] = [len(prepared.train), len(prepared.eval)]
        out["timings"] = prepared.timings
        out["log"] = [line for line in lines if "prepared" in line or "cache" in line]
    out["seconds"] = time.perf_counter() - started
    return out


# --- measuring ---------------------------------------------------------------------------------


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def measure(stage: str, data: Path, work: Path, tokenizer_dir: str) -> dict:
    """Run one stage in a child process: its JSON result, wall time and peak RSS."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--stage", stage, "--file", str(data), "--work", str(work),
           "--tokenizer", tokenizer_dir]
    env = {**os.environ, "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "true"}
    started = time.perf_counter()
    errors = (work / f"{stage}.stderr").open("w+")
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, env=env, text=True)
    peak_tree = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_tree
        while not done.is_set():
            peak_tree = max(peak_tree, _tree_rss(child.pid))
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = child.stdout.read()  # one JSON line; the child's logs go to <stage>.stderr
    _, status, usage = os.wait4(child.pid, 0)  # this child's own resource use, peak RSS included
    done.set()
    sampler.join()
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    errors.seek(0)
    if child.returncode != 0:
        raise RuntimeError(f"stage {stage} failed ({child.returncode}):\n{errors.read()[-4000:]}")
    errors.close()
    result = json.loads(out.strip().splitlines()[-1])
    result["wall_seconds"] = wall
    result["peak_rss"] = usage.ru_maxrss * 1024  # kilobytes on Linux
    result["peak_tree_rss_sampled"] = peak_tree
    return result


def tokenizer_folder(models_dir: Path) -> str:
    """The bundled SmolLM2 as the studio resolves it (converted once from its GGUF)."""
    from app.core.models import resolve_model

    return resolve_model("SmolLM2-135M-Instruct", models_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100MB,1GiB", help="comma-separated data sizes (default 100MB,1GiB)")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "results" / "data_scale")
    parser.add_argument("--models-dir", type=Path, default=None, help="where the bundled model is converted "
                        "(default: the studio's, from TUNESTUDIO_HOME)")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(run_stage(args.stage, args.file, args.work, args.tokenizer), default=str))
        return

    import shutil

    from app.core.settings import Settings
    from app.data.limits import Limits

    models_dir = args.models_dir or Settings.from_env().models_dir
    tokenizer_dir = tokenizer_folder(models_dir)
    stages = [s for s in args.stages.split(",") if s]
    results = []
    for size in (parse_size(s) for s in args.sizes.split(",")):
        work = args.work / f"{size}"
        work.mkdir(parents=True, exist_ok=True)
        data = work / "instructions.jsonl"
        print(f"generating {human(size)} of instruction rows ...", flush=True)
        info = generate(data, size, Limits().max_rows)
        for name in ("rows.arrow", "records.arrow"):
            (work / name).unlink(missing_ok=True)
        shutil.rmtree(work / "cache", ignore_errors=True)
        for stage in stages:
            load = os.getloadavg()[0]
            result = measure(stage, data, work, tokenizer_dir)
            result.update(size=size, bytes=info["bytes"], file_rows=info["rows"], load_before=load,
                          load_after=os.getloadavg()[0])
            results.append(result)
            print(row_text(result), flush=True)
    print()
    print(table(results))
    out = ROOT / "bench" / "results" / "data_scale.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    measured = {r["size"] for r in results}
    kept = json.loads(out.read_text())["results"] if out.is_file() else []  # other sizes' last figures stay
    every = [r for r in kept if r["size"] not in measured] + results
    out.write_text(json.dumps({"before": BEFORE, "results": sorted(every, key=lambda r: r["size"])}, indent=1,
                              default=str))
    print(f"\nwritten to {out}")


def _rate(result: dict) -> tuple[str, str]:
    seconds, rows = result["seconds"], result.get("rows") or result["file_rows"]
    if result["stage"] == "baseline":
        return "-", "-"
    if result["stage"] == "ceiling":
        return "-", f"{rows / seconds:,.0f}"
    if result["stage"] == "prepare":
        t = result["timings"]
        tokenize = t["tokenized_rows"] / t["tokenize"] if t.get("tokenize") else 0
        return f"{result['file_rows'] / seconds:,.0f}", f"{tokenize:,.0f}"
    return f"{rows / seconds:,.0f}", "-"


def row_text(r: dict) -> str:
    rate, tokenize = _rate(r)
    return (f"{human(r['bytes']):>10} {r['file_rows']:>9,} {r['stage']:<9} {r['seconds']:>8.1f} {rate:>10} "
            f"{tokenize:>10} {human(r['peak_rss']):>10} {human(r['peak_tree_rss_sampled']):>10} "
            f"{r['peak_rss'] / r['bytes']:>6.2f}x {r['load_before']:>5.1f}")


def table(results: list[dict]) -> str:
    head = (f"{'file':>10} {'rows':>9} {'stage':<9} {'seconds':>8} {'rows/s':>10} {'tok rows/s':>10} "
            f"{'peak RSS':>10} {'tree RSS':>10} {'/file':>7} {'load':>5}")
    return "\n".join([head, "-" * len(head), *(row_text(r) for r in results)])


if __name__ == "__main__":
    main()
