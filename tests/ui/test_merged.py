"""Merged-model download: the zip holds a plain transformers model equal to base + adapter."""

import zipfile

import pytest
import torch
import transformers

import tuners
from app.core.settings import Settings
from app.core.spec import DataSpec, ModelSpec, RunSpec
from app.registry.models import Artifact, Run
from app.services import merged
from app.services.context import Context
from tests.engine.helpers import save_tiny_model
from tests.support.tiny_models import batch, tiny_model


@pytest.fixture
def ctx(tmp_path):
    c = Context.open(Settings.from_env({"TUNESTUDIO_HOME": str(tmp_path / "home")}))
    yield c
    c.close()


def finished_run(ctx, model_dir, adapter_dir, method: dict) -> int:
    spec = RunSpec(name="m", model=ModelSpec(name=str(model_dir)), data=DataSpec(dataset="data.csv"), method=method)
    with ctx.session() as s:
        run = Run(name="m", status="succeeded", spec=spec.to_dict(), model=str(model_dir),
                  method=method["peft_type"], step=1)
        s.add(run)
        s.flush()
        s.add(Artifact(run_id=run.id, kind="adapter", path=str(adapter_dir), bytes=1, sha256="0" * 64))
        s.commit()
        return run.id


def test_merged_zip_is_the_base_with_the_lora_update_folded_in(ctx, tmp_path):
    model_dir = save_tiny_model(tmp_path / "base")
    tuned = tuners.apply(tiny_model("llama"), tuners.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in tuned.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    tuned.save_pretrained(tmp_path / "adapter")
    run_id = finished_run(ctx, model_dir, tmp_path / "adapter", {"peft_type": "LORA", "r": 4,
                                                                 "target_modules": ["q_proj", "v_proj"]})
    seen = []
    path = merged.export_merged_zip(ctx, run_id, lambda stage, mb: seen.append((stage, mb)))
    # every stage of the wait is reported, in order, with the size of what is written and packed
    assert [stage for stage, _ in seen] == ["loading", "merging", "writing", "zipping"]
    weights = (tmp_path / "base" / "model.safetensors").stat().st_size
    assert all(mb >= round(weights / 1e6) for stage, mb in seen if stage in ("writing", "zipping"))
    info = zipfile.ZipFile(path).getinfo("model.safetensors")
    assert info.compress_type == zipfile.ZIP_STORED  # float weights do not deflate: not worth the wait
    assert zipfile.ZipFile(path).getinfo("config.json").compress_type == zipfile.ZIP_DEFLATED
    names = set(zipfile.ZipFile(path).namelist())
    assert "model.safetensors" in names and "config.json" in names and "tokenizer.json" in names
    zipfile.ZipFile(path).extractall(tmp_path / "merged")
    plain = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    inputs = batch("llama")
    with torch.no_grad():
        expected = tuned.eval()(**inputs).logits
        base = tiny_model("llama")(**inputs).logits
        got = plain(**inputs).logits
    assert torch.allclose(got, expected, atol=1e-4)
    assert not torch.allclose(got, base, atol=1e-3)
    assert not any(".lora_" in k for k in plain.state_dict())
    seen.clear()
    assert merged.export_merged_zip(ctx, run_id, lambda stage, mb: seen.append(stage)) == path
    assert seen == []  # made once, then reused at once


def test_a_method_that_cannot_merge_is_refused_by_name(ctx, tmp_path):
    model_dir = save_tiny_model(tmp_path / "base")
    cfg = tuners.config_from_dict({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 4, "task_type": "CAUSAL_LM"})
    tuners.apply(tiny_model("llama"), cfg).save_pretrained(tmp_path / "adapter")
    run_id = finished_run(ctx, model_dir, tmp_path / "adapter", {"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 4})
    with pytest.raises(merged.NotMergeable, match="PROMPT_TUNING adapters cannot be merged"):
        merged.export_merged_zip(ctx, run_id)
    assert not merged.merged_zip_path(ctx, run_id).exists()
