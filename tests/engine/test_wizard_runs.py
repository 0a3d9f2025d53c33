"""What the wizard builds, the worker trains: the studio's own path from a page's values to an adapter.

The page's values go through the same services the page calls (model check, upload, data preview,
method form defaults, preset, ``wizard.build_spec``, ``runs.create_run``), and the run is trained by
the worker's ``execute_run`` on the real engine, without Celery in between.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from app.core.refs import registered_ref
from app.services import data_preview, method_form, model_info, runs, wizard
from worker.tasks import execute_run

MINILM = "all-MiniLM-L6-v2"
COLOURS = {"sky": "blue", "grass": "green", "snow": "white", "coal": "black", "sea": "blue", "leaf": "green",
           "milk": "white", "night": "black"}


def write_colour_pairs(path: Path) -> Path:
    """Pairs of sentences, labelled by whether they name the same colour (56 rows, two classes)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sentence1", "sentence2", "label"])
        for a, colour_a in COLOURS.items():
            for b, colour_b in COLOURS.items():
                if a != b:
                    writer.writerow([f"The {a} is {colour_a}.", f"The {b} is {colour_b}.",
                                     "same" if colour_a == colour_b else "different"])
    return path


def test_pair_classification_through_the_wizard_on_minilm_trains_a_classifier(ctx, tmp_path):
    # step 1: the bundled encoder, as the model check describes it
    info = model_info.describe_model(MINILM, ctx.settings.models_dir)
    # step 2: the upload, and the shape and mapping the data step detects
    view = data_preview.register_upload(ctx, write_colour_pairs(tmp_path / "pairs.csv"), "pairs.csv")
    ref = registered_ref(view.id)
    shown = data_preview.preview(ctx, ref)
    assert shown.problem is None and shown.shape == "pair_classification"
    # step 3: LoRA with the form's own defaults; step 4: the quick preset, shortened
    form = method_form.describe_method("LORA")
    quick = wizard.preset_values("quick", "LORA")
    spec = wizard.build_spec(wizard.WizardChoices(
        name="", model=MINILM, dataset=ref, peft_type="LORA",
        method_values={f.name: f.form_default() for f in form.fields},
        shape=shown.shape, mapping=shown.mapping, model_tasks=info.tasks,
        epochs=quick["epochs"], learning_rate=quick["learning_rate"], batch_size=quick["batch_size"],
        max_steps=6, eval_every=3, max_length=64,
    ))
    assert spec.model.task == "SEQ_CLS" and spec.task == "SEQ_CLS"

    run_id = runs.create_run(ctx, spec)
    status = execute_run(run_id, ctx.settings, ctx.registry)

    run = runs.get_run(ctx, run_id)
    assert (status, run.error) == ("succeeded", None)
    assert run.step == run.total_steps == 6
    adapter = Path(run.adapter_path)
    assert json.loads((adapter / "adapter_config.json").read_text())["task_type"] == "SEQ_CLS"
    assert json.loads((adapter / "label_map.json").read_text())["id2label"] == {"0": "different", "1": "same"}
    assert not (adapter / "chat_template.jinja").exists()  # a classifier renders no chat
    evals = [p for p in runs.metrics(ctx, run_id) if p.split == "eval"]
    assert evals and all(p.accuracy is not None for p in evals)
