"""The run's recipe (app.core.recipe) is the engine's first log line and a section of every model card
it writes (final adapter, best eval's adapter, checkpoints), so a downloaded adapter says how it was made."""

from __future__ import annotations

from app.core.recipe import recipe
from app.core.spec import RunSpec
from tests.engine.helpers import mapping_spec, save_tiny_model, write_mapping_csv
from worker.engine import MemoryReporter, train


def test_first_log_line_and_model_cards_name_the_full_recipe(tmp_path):
    model = save_tiny_model(tmp_path / "llama")
    data = write_mapping_csv(tmp_path / "colours.csv")
    spec_dict = mapping_spec(model, data, max_steps=3, eval_every=1, checkpoint_every=2, eval_samples=4)
    spec_dict["method"].update(r=4, lora_alpha=8, use_dora=True, use_rslora=True)
    spec = RunSpec.from_dict(spec_dict)
    reporter = MemoryReporter()
    result = train(spec, tmp_path / "out", reporter, tmp_path / "models")

    line = recipe(spec)
    assert line.startswith("LoRA (DoRA + rsLoRA) · r 4, alpha 8 · full-precision base, fp32 · lr 2e-2, 3 steps, "
                           "batch 8")
    assert reporter.lines[0] == f"info recipe: {line}"

    cards = [result.adapter_dir / "README.md", *sorted((tmp_path / "out").glob("checkpoints/step-*/README.md"))]
    cards += [p / "README.md" for p, kind in ((a[1], a[0]) for a in reporter.artifacts) if kind == "best_adapter"
              and (p / "README.md").is_file()]
    assert len(cards) >= 2  # the adapter and the step-2 checkpoint, plus a best eval's adapter if one is kept
    for card in cards:
        text = card.read_text()
        assert f"## Training recipe\n\n{line}\n" in text, card
        assert "training_config.yaml" in text
        assert text.index("## Training recipe") < text.index("## Load")  # after the method, before the code
