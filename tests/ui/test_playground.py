"""Playground: base (adapter disabled) vs tuned outputs for the same prompt; label probabilities."""

import copy

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


# multi-turn chat ----------------------------------------------------------------------------


def lora_llama():
    return perturbed(tuners.apply(tiny_model("llama"), tuners.LoraConfig(r=4, target_modules="all-linear"))).eval()


HISTORY = [{"role": "user", "content": "What colour is the sky?"},
           {"role": "assistant", "content": "Blue.", "metadata": None, "options": None}]


def test_chat_prompt_renders_the_history_with_the_training_template():
    from app.data import render_chat

    tok = tokenizer("llama")
    text = playground.chat_prompt(tok, HISTORY, "And the grass?")
    expected = render_chat(tok, [{"role": "user", "content": "What colour is the sky?"},
                                 {"role": "assistant", "content": "Blue."},
                                 {"role": "user", "content": "And the grass?"}], add_generation_prompt=True)
    assert text == expected
    assert text.index("sky") < text.index("Blue.") < text.index("grass") and text.rstrip().endswith("assistant")


def test_a_tokenizer_without_a_template_gets_chatml_as_training_did():
    tok = copy.deepcopy(tokenizer("llama"))  # the cached one is shared with other modules' tests
    tok.chat_template = None
    text = playground.chat_prompt(tok, HISTORY, "And the grass?")
    assert text.startswith("<|im_start|>user\nWhat colour is the sky?<|im_end|>\n")
    assert "<|im_start|>assistant\nBlue.<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")


def test_plain_and_source_styles_follow_their_training_shapes():
    tok = tokenizer("llama")
    assert playground.chat_prompt(tok, HISTORY, "grass?", playground.PLAIN) == "What colour is the sky?\nBlue.\ngrass?"
    assert playground.chat_prompt(tok, None, "grass?", playground.SOURCE) == "grass?"
    assert playground.chat_prompt(tok, HISTORY, "grass?", playground.SOURCE) == (
        "user: What colour is the sky?\nassistant: Blue.\nuser: grass?")


def test_second_turn_answers_from_the_whole_conversation():
    tok = tokenizer("llama")
    tuned = lora_llama()
    loaded = playground.Loaded(4, "CAUSAL_LM", tuned, tok, None)
    text = playground.chat_prompt(tok, HISTORY, "And the grass?")
    enc = tok(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = tuned.generate(**enc, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    expected = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    got = playground.reply(loaded, HISTORY, "And the grass?", adapter=True, max_new_tokens=6)
    assert got == expected and got != playground.reply(loaded, None, "And the grass?", adapter=True, max_new_tokens=6)


def test_stream_grows_token_by_token_and_ends_with_the_whole_answer():
    loaded = playground.Loaded(5, "CAUSAL_LM", lora_llama(), tokenizer("llama"), None)
    parts = list(playground.stream_reply(loaded, None, "hi", adapter=False, max_new_tokens=8))
    assert parts[-1].done and not any(p.done for p in parts[:-1])
    assert len(parts) >= 3  # pieces arrived before the end
    texts = [p.text for p in parts[:-1]]
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:]))
    assert parts[-1].text == playground.reply(loaded, None, "hi", adapter=False, max_new_tokens=8)
    assert 1 <= parts[-1].tokens <= 8


def test_leaving_a_stream_stops_generation_and_frees_the_model():
    loaded = playground.Loaded(6, "CAUSAL_LM", lora_llama(), tokenizer("llama"), None)
    stream = playground.stream_reply(loaded, None, "hi", adapter=False, max_new_tokens=2000)
    first = next(stream)
    assert first.tokens >= 1
    stream.close()
    assert not loaded.lock.locked()
    assert not loaded.tuned._disabled  # the adapter is back on for the next question


@pytest.mark.parametrize("value", [0, -3, 5000, "many", None])
def test_max_new_tokens_out_of_range_names_the_field(value):
    loaded = playground.Loaded(7, "CAUSAL_LM", None, tokenizer("llama"), None)
    with pytest.raises(playground.PlaygroundError, match="max new tokens: must be a whole number from 1 to 2048"):
        next(playground.stream_reply(loaded, None, "hi", adapter=True, max_new_tokens=value))


# the per-run model cache --------------------------------------------------------------------


def test_cache_loads_each_run_once_and_drops_the_least_recently_used():
    loads = []

    def loader(ctx, run_id):
        loads.append(run_id)
        return playground.Loaded(run_id, "CAUSAL_LM", object(), None, None)

    pg = playground.Playground(None, size=2, loader=loader)
    first = pg.get(1)
    assert pg.get(1) is first and pg.cached(1) and loads == [1]
    pg.get(2)
    pg.get(1)  # 1 is now the most recent
    pg.get(3)  # so 2 goes
    assert loads == [1, 2, 3] and pg.cached(1) and not pg.cached(2) and pg.cached(3)
    assert pg.get(1) is first and loads == [1, 2, 3]
    pg.get(2)
    assert loads == [1, 2, 3, 2] and not pg.cached(3)


def test_a_failed_load_is_not_cached():
    calls = []

    def loader(ctx, run_id):
        calls.append(run_id)
        raise playground.PlaygroundError("no adapter yet")

    pg = playground.Playground(None, loader=loader)
    for _ in range(2):
        with pytest.raises(playground.PlaygroundError):
            pg.get(9)
    assert calls == [9, 9] and not pg.cached(9)


def test_default_run_keeps_the_pick_else_the_newest():
    choices = [("#3 c", 3), ("#2 b", 2)]
    assert playground.default_run(choices) == 3
    assert playground.default_run(choices, 2) == 2
    assert playground.default_run(choices, "2") == 2
    assert playground.default_run(choices, 7) == 3  # deleted since
    assert playground.default_run([], 2) is None


@pytest.mark.parametrize(("shape", "logged", "style"), [
    ("auto", "instruction", "chat"), ("auto", "text", "plain"), ("auto", "prompt_completion", "plain"),
    ("prompt_completion", None, "plain"), ("chat", None, "chat"), ("auto", None, "chat"),
])
def test_prompt_style_follows_the_shape_the_run_trained_on(tmp_path, shape, logged, style):
    from app.core.settings import Settings
    from app.core.spec import DataSpec, ModelSpec, RunSpec
    from app.registry.models import LogLine, Run
    from app.services.context import Context

    ctx = Context.open(Settings.from_env({"TUNESTUDIO_HOME": str(tmp_path / "home")}))
    try:
        spec = RunSpec(name="s", model=ModelSpec(name="m"), data=DataSpec(dataset="d.csv", shape=shape),
                       method={"peft_type": "LORA"})
        with ctx.session() as s:
            run = Run(name="s", status="succeeded", spec=spec.to_dict(), model="m", method="LORA", step=1)
            s.add(run)
            s.flush()
            s.add(LogLine(run_id=run.id, message="model: loaded"))
            if logged:
                s.add(LogLine(run_id=run.id, message=f"data: detected shape {logged} mapping {{}} (confidence 0.9)"))
            s.commit()
            run_id = run.id
        assert playground.prompt_style(ctx, run_id) == style
    finally:
        ctx.close()


def test_chat_bubbles_show_markup_as_typed_and_give_the_text_back():
    from app.ui.tabs.playground import _bubble, as_typed

    typed = "And the <b>grass</b> & the <script>x</script>?"
    bubble = _bubble("user", typed)
    assert "<b>" not in bubble["content"] and "<script>" not in bubble["content"]
    assert as_typed([bubble, {"role": "assistant", "content": "a &amp; b", "metadata": None}]) == [
        {"role": "user", "content": typed}, {"role": "assistant", "content": "a & b", "metadata": None}]
