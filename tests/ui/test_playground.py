"""Playground: base (adapter disabled) vs tuned outputs for the same prompt; label probabilities."""

import pytest
import torch

import tuners
from app.services import playground
from tests.support.tiny_models import tiny_model, tokenizer


def perturbed(tuned):
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in tuned.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 2.0)
    return tuned


def test_base_output_is_the_plain_model_and_tuned_differs():
    tok = tokenizer("llama")
    plain = tiny_model("llama")
    prompt = "What colour is the sky?"
    text = playground.prompt_text(tok, prompt)
    enc = tok(text, return_tensors="pt", add_special_tokens=False)
    expected = tok.decode(
        plain.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)[0, enc["input_ids"].shape[1]:],
        skip_special_tokens=True,
    )
    tuned = perturbed(tuners.apply(tiny_model("llama"), tuners.LoraConfig(r=4, target_modules="all-linear")))
    loaded = playground.Loaded(1, "CAUSAL_LM", tuned.eval(), tok, None)
    out = playground.generate(loaded, prompt, max_new_tokens=8)
    assert out.base == expected
    assert out.tuned != out.base


def test_prompt_uses_the_chat_template_when_there_is_one():
    tok = tokenizer("llama")
    assert tok.chat_template
    text = playground.prompt_text(tok, "hi")
    assert "hi" in text and text != "hi" and text.rstrip().endswith("assistant")


def test_label_probabilities_for_a_classifier_sum_to_one_and_use_label_names():
    tok = tokenizer("bert")
    tuned = perturbed(tuners.apply(tiny_model("bert", "SEQ_CLS"),
                                   tuners.LoraConfig(r=4, target_modules="all-linear", task_type="SEQ_CLS")))
    loaded = playground.Loaded(2, "SEQ_CLS", tuned.eval(), tok, ["neg", "neu", "pos"])
    base, tuned_probs = playground.label_probabilities(loaded, "a fine drug")
    assert set(base) == {"neg", "neu", "pos"} == set(tuned_probs)
    assert abs(sum(base.values()) - 1) < 1e-5 and abs(sum(tuned_probs.values()) - 1) < 1e-5
    assert base != tuned_probs


def test_classifier_refuses_generation_with_a_clear_message():
    loaded = playground.Loaded(3, "SEQ_CLS", None, tokenizer("bert"), None)
    with pytest.raises(playground.PlaygroundError, match="classifier"):
        playground.generate(loaded, "hello")
