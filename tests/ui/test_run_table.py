"""The Runs tab's rows come from the registry: best eval loss, duration, dataset name, filters."""

from datetime import UTC, datetime, timedelta

import pytest

from app.core.settings import Settings
from app.registry.models import MetricPoint, Run
from app.services import datasets, run_table
from app.services.context import Context


@pytest.fixture
def ctx(tmp_path):
    c = Context.open(Settings.from_env({"TUNESTUDIO_HOME": str(tmp_path / "home")}))
    yield c
    c.close()


def add_run(ctx, name, status, dataset, evals=(), method="LORA", seconds=None):
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with ctx.session() as s:
        run = Run(name=name, status=status, spec={"data": {"dataset": dataset}}, model="/models/tiny-llama",
                  method=method, step=0, started_at=start if seconds else None,
                  finished_at=start + timedelta(seconds=seconds) if seconds else None)
        s.add(run)
        s.flush()
        for step, loss in evals:
            s.add(MetricPoint(run_id=run.id, step=step, epoch=0.0, split="eval", loss=loss))
        s.commit()
        return run.id


def test_rows_show_best_eval_loss_duration_and_the_dataset_file_name(ctx, tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("text,label\ngood,pos\nbad,neg\nfine,pos\nawful,neg\n", encoding="utf-8")
    view = datasets.add_dataset(ctx, path)
    first = add_run(ctx, "a", "succeeded", f"dataset:{view.id}", evals=[(1, 2.0), (2, 1.25), (3, 1.5)], seconds=75)
    second = add_run(ctx, "b", "failed", "dataset:999", method="IA3")
    rows = {r.id: r for r in run_table.run_rows(ctx)}
    assert rows[first].best_eval_loss == 1.25 and rows[first].duration == "1m 15s"
    assert rows[first].dataset == "reviews.csv" and rows[first].model == "tiny-llama"
    assert rows[second].dataset == "dataset:999 (deleted)" and rows[second].best_eval_loss is None
    assert rows[first].cells()[6] == "1.2500" and rows[second].cells()[6] == "–"


def test_filters_by_status_and_text(ctx):
    add_run(ctx, "alpha", "succeeded", "x.csv")
    add_run(ctx, "beta", "failed", "y.csv", method="IA3")
    assert [r.name for r in run_table.run_rows(ctx, status="failed")] == ["beta"]
    assert [r.name for r in run_table.run_rows(ctx, text="ia3")] == ["beta"]
    assert [r.name for r in run_table.run_rows(ctx, status="all", text="")] == ["beta", "alpha"]


def test_recipe_names_variant_quantization_and_key_numbers():
    from app.core.recipe import method_label, recipe
    from app.core.spec import DataSpec, ModelSpec, RunSpec, TrainingSpec

    spec = RunSpec(name="x", model=ModelSpec(name="org/m", precision="nf4"), data=DataSpec(dataset="a.csv"),
                   method={"peft_type": "LORA", "r": 16, "lora_alpha": 32, "use_dora": True, "use_rslora": True,
                           "target_modules": "attention"},
                   training=TrainingSpec(learning_rate=1.5e-4, max_steps=30, batch_size=4, grad_accum=2, bf16=False))
    assert recipe(spec) == ("LoRA (DoRA + rsLoRA) · r 16, alpha 32 · NF4 + double quant, fp32 · "
                            "lr 1.5e-4, 30 steps, batch 4×2")
    assert recipe(spec.to_dict()) == recipe(spec)  # the registry stores the dict
    assert method_label(spec) == "LoRA (DoRA + rsLoRA), NF4 + double quant"
    plain = {"model": {"precision": "full"}, "method": {"peft_type": "LORA", "r": 8, "lora_alpha": 16},
             "training": {"learning_rate": 2e-4, "epochs": 2.0, "batch_size": 8, "bf16": "auto"}}
    assert recipe(plain) == "LoRA · r 8, alpha 16 · full-precision base, bf16 where supported · lr 2e-4, 2 epochs, batch 8"
    assert method_label(plain) == "LoRA"
    int8 = {"model": {"precision": "int8"}, "method": {"peft_type": "BOTTLENECK", "variant": "pfeiffer",
                                                        "reduction_factor": 16}, "training": {"learning_rate": 1e-3}}
    assert recipe(int8).startswith("Bottleneck adapter (pfeiffer) · reduction 16 · int8, ")
    assert recipe({"model": {"precision": "nf4", "double_quant": False}, "method": {"peft_type": "ADALORA", "init_r": 12,
                   "target_r": 8, "lora_alpha": 8}}).startswith("AdaLoRA · r 12→8, alpha 8 · NF4, ")


def test_every_method_has_a_recipe_from_its_defaults():
    import dataclasses

    import tuners
    from app.core.recipe import recipe

    for peft_type, method in tuners.METHODS.items():
        defaults = {f.name: f.default for f in dataclasses.fields(method.config_cls)
                    if f.default is not dataclasses.MISSING}
        text = recipe({"method": {**defaults, "peft_type": peft_type}, "model": {}, "training": {}})
        assert text.startswith(method.name), (peft_type, text)


def test_table_shows_the_recipe_and_finds_runs_by_it(ctx):
    with ctx.session() as s:
        s.add(Run(name="qdora", status="succeeded", model="/models/tiny-llama", method="LORA", step=0,
                  spec={"data": {"dataset": "x.csv"}, "model": {"precision": "nf4", "double_quant": True},
                        "method": {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "use_dora": True},
                        "training": {"learning_rate": 2e-4, "max_steps": 10, "batch_size": 2}}))
        s.commit()
    add_run(ctx, "plain", "succeeded", "y.csv")
    rows = {r.name: r for r in run_table.run_rows(ctx)}
    assert rows["qdora"].recipe.startswith("LoRA (DoRA) · r 4, alpha 8 · NF4 + double quant")
    assert rows["qdora"].cells()[run_table.COLUMNS.index("recipe")] == rows["qdora"].recipe
    assert rows["plain"].recipe == "LORA"  # a spec without a method section: the stored method name
    assert [r.name for r in run_table.run_rows(ctx, text="dora")] == ["qdora"]
    assert [r.name for r in run_table.run_rows(ctx, text="nf4")] == ["qdora"]
