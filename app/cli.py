"""The ``tunestudio`` command line: train from a spec file, inspect runs, export adapters, run a worker.

    tunestudio train spec.yaml --wait     tunestudio runs list | show ID | cancel ID | resume ID
    tunestudio export ID --out a.zip      tunestudio datasets add FILE
    tunestudio worker                     tunestudio serve [--host H] [--port P]
"""

from __future__ import annotations

import argparse
import dataclasses
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from app.core.errors import describe
from app.core.settings import Settings, SettingsError, parse_port


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return args.handler(args, Settings.from_env())
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI reports every error as one clear line
        print(f"error: {describe(exc)}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tunestudio", description="TuneStudio: no-code fine-tuning studio.")
    sub = p.add_subparsers(metavar="COMMAND")

    train = sub.add_parser("train", help="queue a run from a spec YAML file (see docs/runs.md)")
    train.add_argument("spec", help="path to the spec YAML")
    train.add_argument("--wait", action="store_true", help="follow the run and print progress until it ends")
    train.set_defaults(handler=_train)

    runs = sub.add_parser("runs", help="list, show or cancel runs")
    runs_sub = runs.add_subparsers(metavar="ACTION", required=True)
    ls = runs_sub.add_parser("list", help="list runs, newest first")
    ls.add_argument("--status", help="only runs with this status")
    ls.set_defaults(handler=_runs_list)
    show = runs_sub.add_parser("show", help="a run's status, spec summary, metrics and log tail")
    show.add_argument("run_id", type=int)
    show.set_defaults(handler=_runs_show)
    cancel = runs_sub.add_parser("cancel", help="ask a run to stop")
    cancel.add_argument("run_id", type=int)
    cancel.set_defaults(handler=_runs_cancel)
    resume = runs_sub.add_parser("resume", help="queue a failed or cancelled run again, from its last checkpoint")
    resume.add_argument("run_id", type=int)
    resume.add_argument("--more-steps", type=int, help="train this many steps beyond the run's plan")
    resume.set_defaults(handler=_runs_resume)

    export = sub.add_parser("export", help="write a finished run's adapter as a zip (its best eval's when kept)")
    export.add_argument("run_id", type=int)
    export.add_argument("--out", required=True, help="zip file to write")
    export.add_argument("--last", action="store_true", help="the last step's adapter instead of the best eval's")
    export.set_defaults(handler=_export)

    datasets = sub.add_parser("datasets", help="register data files")
    ds_sub = datasets.add_subparsers(metavar="ACTION", required=True)
    add = ds_sub.add_parser("add", help="check, store and register a data file (the studio's upload check)")
    add.add_argument("file")
    add.add_argument("--name")
    add.add_argument("--shape", help="check the data as this shape instead of the detected one")
    add.add_argument("--map", action="append", default=[], metavar="ROLE=COLUMN", type=_role_column,
                     help="the column for a role of the shape (repeat for each role); default: detected")
    add.set_defaults(handler=_datasets_add)
    ds_list = ds_sub.add_parser("list", help="registered datasets")
    ds_list.set_defaults(handler=_datasets_list)
    ds_delete = ds_sub.add_parser("delete", help="remove a registered dataset (refused while a run uses it)")
    ds_delete.add_argument("dataset_id", type=int)
    ds_delete.set_defaults(handler=_datasets_delete)

    worker = sub.add_parser("worker", help="run a training worker (one run at a time)")
    worker.add_argument("--name", default=socket.gethostname(), help="worker node name")
    worker.add_argument("--loglevel", default="INFO")
    worker.set_defaults(handler=_worker)

    serve = sub.add_parser("serve", help="start the studio UI with an embedded worker")
    serve.add_argument("--host", help="address to bind (default $TUNESTUDIO_HOST or 127.0.0.1; "
                                      "set a login before binding beyond localhost)")
    serve.add_argument("--port", type=_port, help="port to listen on (default $TUNESTUDIO_PORT or 7860)")
    serve.set_defaults(handler=_serve)
    return p


def _ctx(settings: Settings):
    from app.services import Context

    return Context.open(settings)


def _train(args: argparse.Namespace, settings: Settings) -> int:
    from app.core.spec import RunSpec
    from app.services import create_run

    spec = RunSpec.load(args.spec)
    ctx = _ctx(settings)
    try:
        run_id = create_run(ctx, spec, base_dir=Path(args.spec).resolve().parent)
        print(f"run {run_id} queued: {spec.name} ({spec.model.name}, {spec.method['peft_type']})")
        if not args.wait:
            return 0
        return _follow(ctx, run_id)
    finally:
        ctx.close()


def _follow(ctx, run_id: int) -> int:  # noqa: ANN001
    from app.services import get_run, metrics

    last_step, last_status = -1, None
    while True:
        run = get_run(ctx, run_id)
        if run.status != last_status:
            print(f"[run {run_id}] {run.status}", flush=True)
            last_status = run.status
        for p in metrics(ctx, run_id, since_step=last_step if last_step >= 0 else None):
            if p.split == "train":
                print(f"  step {p.step}/{run.total_steps or '?'} epoch {p.epoch:.2f} loss {p.loss:.4f} "
                      f"lr {p.learning_rate:.2e} tok/s {p.tokens_per_second:.0f} grad {p.grad_norm:.3f}", flush=True)
            else:
                acc = f" accuracy {p.accuracy:.3f}" if p.accuracy is not None else ""
                print(f"  eval step {p.step}: loss {p.loss:.4f}{acc}", flush=True)
            last_step = max(last_step, p.step)
        if run.is_final:
            if run.status == "failed":
                print(f"[run {run_id}] error: {run.error}", file=sys.stderr)
            elif run.adapter_path:
                print(f"[run {run_id}] adapter: {run.adapter_path}")
            return 0 if run.status == "succeeded" else 1
        time.sleep(1.0)


def _runs_list(args: argparse.Namespace, settings: Settings) -> int:
    from app.services import list_runs

    ctx = _ctx(settings)
    try:
        runs = list_runs(ctx, status=args.status)
    finally:
        ctx.close()
    print(f"{'ID':>5}  {'STATUS':<11} {'STEP':>9}  {'METHOD':<12} {'MODEL':<28} NAME")
    for r in runs:
        step = f"{r.step}/{r.total_steps}" if r.total_steps else str(r.step)
        print(f"{r.id:>5}  {r.status:<11} {step:>9}  {r.method:<12} {r.model[:28]:<28} {r.name}")
    return 0


def _runs_show(args: argparse.Namespace, settings: Settings) -> int:
    from app.services import get_run, logs, metrics, run_disk_bytes

    ctx = _ctx(settings)
    try:
        r = get_run(ctx, args.run_id)
        points = metrics(ctx, args.run_id)
        tail = logs(ctx, args.run_id, tail=20)
        disk = run_disk_bytes(ctx, args.run_id)
    finally:
        ctx.close()
    print(f"run {r.id}: {r.name}\n  status   {r.status}\n  model    {r.model}\n  method   {r.method}")
    print(f"  step     {r.step}/{r.total_steps or '?'}\n  created  {r.created_at:%Y-%m-%d %H:%M:%S}")
    if r.resumed:
        print(f"  resumed  {r.resumed}")
    if r.worker_host:
        print(f"  worker   {r.worker_host}")
    if r.error:
        print(f"  error    {r.error}")
    if r.adapter_path:
        print(f"  adapter  {r.adapter_path}" + (f" (best eval, step {r.best_step})" if r.best_step is not None else ""))
    if r.last_adapter_path and r.last_adapter_path != r.adapter_path:
        print(f"  last     {r.last_adapter_path} (export --last)")
    print(f"  disk     {disk / 2**20:.1f} MiB")
    train = [p for p in points if p.split == "train"]
    evals = [p for p in points if p.split == "eval"]
    if train:
        print(f"  train loss {train[0].loss:.4f} -> {train[-1].loss:.4f} over {len(train)} points")
    if evals:
        print(f"  eval loss  {evals[0].loss:.4f} -> {evals[-1].loss:.4f}")
    if tail:
        print("  log:")
        for line in tail:
            print(f"    {line}")
    return 0


def _runs_cancel(args: argparse.Namespace, settings: Settings) -> int:
    from app.services import cancel_run

    ctx = _ctx(settings)
    try:
        print(f"run {args.run_id}: {cancel_run(ctx, args.run_id)}")
    finally:
        ctx.close()
    return 0


def _runs_resume(args: argparse.Namespace, settings: Settings) -> int:
    from app.services import resume_run

    ctx = _ctx(settings)
    try:
        run = resume_run(ctx, args.run_id, args.more_steps)
    finally:
        ctx.close()
    plan = f" (now {run.spec['training']['max_steps']} steps)" if args.more_steps else ""
    print(f"run {run.id}: {run.status}, attempt {run.attempt}{plan}; it continues from its last checkpoint")
    return 0


def _export(args: argparse.Namespace, settings: Settings) -> int:
    from app.services import export_adapter_zip

    ctx = _ctx(settings)
    try:
        print(export_adapter_zip(ctx, args.run_id, args.out, last=args.last))
    finally:
        ctx.close()
    return 0


def _datasets_add(args: argparse.Namespace, settings: Settings) -> int:
    from app.services import add_dataset

    ctx = _ctx(settings)
    try:
        d = add_dataset(ctx, args.file, name=args.name, shape=args.shape, mapping=dict(args.map) or None)
    finally:
        ctx.close()
    print(f"dataset {d.id}: {d.name} ({d.format}, {d.rows} rows, columns {', '.join(d.columns)}, "
          f"shape {d.shape or 'unknown'})")
    return 0


def _role_column(raw: str) -> tuple[str, str]:
    role, sep, column = raw.partition("=")
    if not sep or not role.strip() or not column:
        raise argparse.ArgumentTypeError(f"expected ROLE=COLUMN (for example text=review), got {raw!r}")
    return role.strip(), column


def _datasets_delete(args: argparse.Namespace, settings: Settings) -> int:
    from app.services import delete_dataset

    ctx = _ctx(settings)
    try:
        delete_dataset(ctx, args.dataset_id)
    finally:
        ctx.close()
    print(f"dataset {args.dataset_id} deleted")
    return 0


def _datasets_list(args: argparse.Namespace, settings: Settings) -> int:
    from app.services import list_datasets

    ctx = _ctx(settings)
    try:
        for d in list_datasets(ctx):
            print(f"{d.id:>5}  {d.format:<8} {d.rows:>8} rows  {d.shape or '-':<18} {d.name}")
    finally:
        ctx.close()
    return 0


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    """A Celery worker on the ``training`` queue: solo pool, so one run at a time in this process
    (a SIGKILL takes the run with it and the reaper fails it; no orphaned pool child keeps training)."""
    import os

    for key, value in settings.env().items():
        os.environ.setdefault(key, value)
    os.environ["TUNESTUDIO_WORKER_NAME"] = args.name  # the registry names the worker as it was started
    settings.ensure_dirs()
    if os.environ.get("TUNESTUDIO_PARENT_PID", "").isdigit():
        from worker.embedded import exit_with_parent

        exit_with_parent(int(os.environ["TUNESTUDIO_PARENT_PID"]))
    from app.registry.db import Registry

    Registry(settings.database_url).dispose()  # apply migrations before taking work
    from app.core.contract import TRAIN_QUEUE, declare_train_queue
    from worker.celery_app import app

    declare_train_queue(settings.broker_url)

    app.worker_main([
        "worker", "--pool=solo", "--concurrency=1", f"--queues={TRAIN_QUEUE}", f"--hostname=tunestudio-{args.name}@%h",
        f"--loglevel={args.loglevel}", "--without-gossip", "--without-mingle",
    ])
    return 0


def _port(raw: str) -> int:
    try:
        return parse_port("--port", raw)
    except SettingsError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--port: ")) from None


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = dataclasses.replace(settings, **overrides)
    try:
        from app.ui.server import serve
    except ImportError as exc:
        print(f"The studio UI is not available in this build ({exc}). Use the CLI: tunestudio --help",
              file=sys.stderr)
        return 1
    serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
