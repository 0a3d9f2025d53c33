"""The studio page: a four-step wizard, the run view, the runs table and the playground.

This module only lays the tabs out and wires events; each step/tab lives in its own module, builds
its components and returns them by name, and every callback calls into those modules and
``app.services``. All components are registered in one ``Elements`` per built page: a callback
that reads more than one component takes them as a set and reads them by name, and one that writes
more than one returns them by name (``app.ui.elements``), so adding a field never shifts another
callback's arguments. State lives in the registry, not in the page.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from app.core.spec import RunSpec
from app.services import draft as draft_service
from app.services import playground as playground_service
from app.services import runs
from app.services.context import Context
from app.services.data_preview import label_names, preview, training_rows
from app.services.wizard import WizardChoices, build_spec, task_for
from app.ui import draft as draft_ui
from app.ui import labels
from app.ui.draft import LOADED, STORED
from app.ui.elements import Elements, Values
from app.ui.labels import t
from app.ui.steps import data as data_step
from app.ui.steps import method as method_step
from app.ui.steps import model as model_step
from app.ui.steps import train as train_step
from app.ui.tabs import datasets as datasets_tab
from app.ui.tabs import playground as playground_tab
from app.ui.tabs import run_view
from app.ui.tabs import runs as runs_tab

NAV = ("wizard.walkthrough", "wizard.step")  # the wizard's shown step and the step it remembers
CHECK = ("model.bundled", "model.custom", "model.trust")  # what the model check reads
CHECKED = ("model.state", "model.info", "model.checked")  # what it writes (model_step.check_model)
COUNT = ("model.state", "data.shape", "data.ref", *data_step.ROLES, "method.choice")  # + the method's fields
ESTIMATE = ("model.state", "method.trainable", "model.precision", "model.quantization", "model.batch",
            "model.seq_len", "method.choice", "data.shape")
PREVIEW_INPUTS = ("data.ref", "model.state", "data.shape", "data.max_length", "data.val_fraction", "data.dedupe",
                  *data_step.ROLES)
SPEC = ("model.state", *CHECK, "model.precision", "model.quantization", "data.ref", "data.shape",
        "data.val_fraction", "data.dedupe", "data.max_length", *data_step.ROLES, *train_step.VALUES)  # + method
# What is saved as a draft: restored as values, or rebuilt from them by the server on load.
DERIVED = ("model.checked", "data.shape", *data_step.ROLES)


def build_app(ctx: Context) -> gr.Blocks:
    return build_page(ctx)[0]


def build_page(ctx: Context) -> tuple[gr.Blocks, Elements]:
    """The page and its components by name."""
    pg = playground_service.Playground(ctx)
    e = Elements()
    # delete_cache: Gradio's copies of uploads and outputs older than a day go, checked hourly.
    with gr.Blocks(title=t("title"), analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
        with gr.Column(elem_classes="ts-header"):
            gr.Markdown(f"# {t('title')}\n{t('tagline')}")
            gr.HTML(run_view.CHART_MARKERS, elem_id="ts-chart-markers")  # point markers for both loss charts
        with gr.Tabs(selected="new") as tabs:
            with (gr.Tab(t("tab.new"), id="new", elem_id="tab-new") as new_tab,
                  gr.Walkthrough(selected=0, elem_id="wizard") as wizard):
                with gr.Step(t("step.model"), id=0, elem_id="step-model"):
                    e.add_all(model_step.build())
                with gr.Step(t("step.data"), id=1, elem_id="step-data"):
                    e.add_all(data_step.build())
                with gr.Step(t("step.method"), id=2, elem_id="step-method"):
                    e.add_all(method_step.build())
                with gr.Step(t("step.train"), id=3, elem_id="step-train"):
                    e.add_all(train_step.build(e["method.choice"].value))
            with gr.Tab(t("tab.run"), id="run", elem_id="tab-run") as run_tab:
                e.add_all(run_view.build(ctx))
            with gr.Tab(t("tab.runs"), id="runs", elem_id="tab-runs") as runs_tab_item:
                e.add_all(runs_tab.build(ctx))
            with gr.Tab(t("tab.datasets"), id="datasets", elem_id="tab-datasets") as datasets_tab_item:
                e.add_all(datasets_tab.build())
            with gr.Tab(t("tab.playground"), id="playground", elem_id="tab-playground") as play_tab:
                e.add_all(playground_tab.build())
        e.add_all({"page.tabs": tabs, "page.tab.new": new_tab, "page.tab.run": run_tab,
                   "page.tab.runs": runs_tab_item, "page.tab.datasets": datasets_tab_item, "page.tab.playground": play_tab, "wizard.walkthrough": wizard,
                   "wizard.step": gr.State(0), STORED: draft_ui.browser_state(ctx.settings.home),
                   LOADED: gr.State(None)})  # the draft as it was at load (or when a run was reused)

        open_in_wizard = _wire_wizard(ctx, demo, e)
        _wire_run_view(ctx, demo, e)
        _wire_address(e)
        _wire_runs(ctx, demo, e, open_in_wizard)
        _wire_datasets(ctx, e)
        _wire_playground(ctx, demo, e, pg)
    return demo, e


def _step(step: int) -> dict[str, Any]:
    """The wizard moved to ``step``, remembered (for ``NAV``)."""
    return {"wizard.walkthrough": gr.Walkthrough(selected=step), "wizard.step": step}


def _wire_wizard(ctx, demo, e: Elements):
    models_dir = ctx.settings.models_dir
    method_fields = method_step.form_fields()

    def go(step: int):
        return lambda: e.updates(_step(step))

    def task_of(info, shape):
        return task_for(shape, info.tasks if info is not None else ())

    # model step
    def check(data):
        v = e.values(data)
        return e.updates(model_step.check_model(v["model.bundled"], v["model.custom"], v["model.trust"], models_dir))

    def count(data):
        # The data's classes size a classifier's head, so the count matches the run's (engine's rule).
        v = e.values(data)
        info, shape, peft_type = v["model.state"], v["data.shape"], v["method.choice"]
        classes = label_names(ctx, v["data.ref"], shape, data_step.mapping_from(shape, v))
        return e.updates(method_step.count_text(info, peft_type, method_step.values_for(peft_type, v),
                                                task_of(info, shape), classes))

    def estimate(data):
        v = e.values(data)
        return e.updates(model_step.estimate_rows(
            v["model.state"], v["method.trainable"], v["model.precision"], v["model.quantization"],
            batch=v["model.batch"], seq_len=v["model.seq_len"], peft_type=v["method.choice"],
            data_shape=v["data.shape"], embedded=ctx.settings.embedded_broker))

    count_event = dict(fn=count, inputs=e.of(COUNT, method_fields), outputs=e.of("method.trainable", "method.count"))
    estimate_event = dict(fn=estimate, inputs=e.of(ESTIMATE), outputs=e.of("model.estimate", "model.fit"))

    e["model.check"].click(check, e.of(CHECK), e.of(CHECKED)).then(**count_event).then(**estimate_event)
    # One listener for several fields, always_last: a restore that sets them all at once (a reload, "new
    # run from this one") queues one estimate, not one per field ahead of the model check and preview.
    gr.on([e[name].change for name in ("model.precision", "model.quantization", "model.batch", "model.seq_len")],
          **estimate_event, trigger_mode="always_last")

    def next_from_model(data):
        v = e.values(data)
        checked, go_on = model_step.next_from_model(v["model.state"], v["model.bundled"], v["model.custom"],
                                                    v["model.trust"], models_dir)
        return e.updates({**checked, **(_step(1) if go_on else {})})

    e["model.next"].click(next_from_model, e.of("model.state", *CHECK), e.of(*CHECKED, *NAV)).then(
        **count_event).then(**estimate_event)

    # data step
    def preview_of(ref, info, shape, mapping, max_length, val_fraction, dedupe) -> dict[str, Any]:
        if not ref:
            return data_step.render_preview(None)
        try:
            prev = preview(ctx, ref, shape=shape, mapping=mapping, tokenizer=getattr(info, "tokenizer", None),
                           max_length=int(max_length or 512))
        except Exception as exc:
            return data_step.render_preview(None, data_step.error_box(str(exc)))
        return data_step.render_preview(prev, val_fraction=val_fraction, dedupe=dedupe)

    def show(v: Values, shape: str | None, mapping: dict[str, str] | None) -> dict[str, Any]:
        return preview_of(v["data.ref"], v["model.state"], shape, mapping, v["data.max_length"],
                          v["data.val_fraction"], v["data.dedupe"])

    def preview_detected(data):
        """New data: the shape and mapping the studio detects."""
        v = e.values(data)
        return e.updates(show(v, None, None)) if v["data.ref"] else gr.skip()

    def preview_reshaped(data):
        """Another shape picked: its mapping detected afresh."""
        v = e.values(data)
        return e.updates(show(v, v["data.shape"], None))

    def preview_mapped(data):
        """The person's shape and column mapping."""
        v = e.values(data)
        shape = v["data.shape"]
        return e.updates(show(v, shape, data_step.mapping_from(shape, v) if shape else None))

    preview_inputs, preview_outputs = e.of(PREVIEW_INPUTS), e.of(data_step.PREVIEW)

    def on_upload(upload):
        path, name = data_step.uploaded_file(upload)
        return e.updates(data_step.upload_shown(*data_step.register(ctx, path, name)))

    def on_demo(name):
        ref, status = data_step.register_demo(ctx, name)
        return e.updates({"data.ref": ref, "data.refusal": None, "data.status": status})

    registered = e.of("data.ref", "data.refusal", "data.status")
    # The data's format sets the task (a classifier scores classes, a language model the vocabulary), so
    # a format detected or picked here redoes the count and the estimate as a model or method change does.
    def and_recount(event) -> None:
        event.then(**count_event).then(**estimate_event)

    # preprocess=False: the callback gets the upload's FileData (its path and the person's file name);
    # Gradio's own filepath preprocessing would leave an empty temp file behind on every upload.
    and_recount(e["data.upload"].upload(on_upload, e["data.upload"], registered, preprocess=False).then(
        preview_detected, preview_inputs, preview_outputs))
    e["data.upload"].clear(lambda: None, None, e["data.refusal"], show_progress="hidden")
    and_recount(e["data.bundled"].input(on_demo, e["data.bundled"], registered).then(
        preview_detected, preview_inputs, preview_outputs))
    and_recount(e["data.shape"].input(preview_reshaped, preview_inputs, preview_outputs))
    e["data.val_fraction"].release(preview_mapped, preview_inputs, preview_outputs)
    e["data.dedupe"].input(preview_mapped, preview_inputs, preview_outputs)
    for name in data_step.ROLES:
        e[name].input(preview_mapped, preview_inputs, preview_outputs)

    def next_from_data(data):
        v = e.values(data)
        ref, refusal = data_step.next_from_data(v["data.ref"], v["data.refusal"])
        return e.updates({"data.ref": ref, "data.status": refusal} if refusal else {"data.ref": ref, **_step(2)})

    e["data.back"].click(go(0), None, e.of(NAV))
    e["data.next"].click(next_from_data, e.of("data.ref", "data.refusal"), e.of("data.ref", "data.status", *NAV)).then(
        **count_event).then(**estimate_event)

    # method step
    e["method.choice"].change(lambda peft_type: e.updates(method_step.show_method(peft_type)), e["method.choice"],
                              e.of(e.names("method.group."), "method.summary")).then(**count_event).then(
        **estimate_event)
    # one count for a restore's many fields, as for the estimate above
    gr.on([e[name].change for name in method_fields], **count_event, trigger_mode="always_last")
    e["method.back"].click(go(1), None, e.of(NAV))
    e["method.next"].click(go(3), None, e.of(NAV))

    # train step
    def apply_preset(data):
        # Sized for the data chosen in step 2 (its training rows) and the task its format implies.
        v = e.values(data)
        rows = training_rows(ctx, v["data.ref"], v["data.val_fraction"])
        return e.updates(train_step.apply_preset(v["train.preset"], v["method.choice"],
                                                 task_of(v["model.state"], v["data.shape"]), rows))

    def follow_method(data):
        v = e.values(data)
        return e.updates(train_step.follow_method(v["method.choice"], v["train.learning_rate"],
                                                  v["train.rate_method"]))

    def learning_rate_note(data):
        v = e.values(data)
        return train_step.learning_rate_note(v["method.choice"], v["train.learning_rate"])

    e["train.preset"].input(apply_preset, e.of("train.preset", "method.choice", "data.ref", "data.val_fraction",
                                                "model.state", "data.shape"), e.of(train_step.PRESET_FIELDS))
    # The learning rate follows the method (unless typed over); its note/warning follows both.
    e["method.choice"].change(follow_method, e.of("method.choice", "train.learning_rate", "train.rate_method"),
                              e.of("train.learning_rate", "train.rate_method"), show_progress="hidden")
    gr.on([e["method.choice"].change, e["train.learning_rate"].change], learning_rate_note,
          e.of("method.choice", "train.learning_rate"), e["train.lr_note"], show_progress="hidden")
    e["train.back"].click(go(2), None, e.of(NAV))

    def spec_from(v: Values) -> RunSpec:
        """The RunSpec for the wizard's current values (raises with a message naming the field)."""
        if not v["data.ref"]:
            raise ValueError("data: no dataset yet; go back to step 2 and upload a file or pick a demo")
        info, shape, peft_type = v["model.state"], v["data.shape"], v["method.choice"]
        return build_spec(WizardChoices(
            model=model_step.chosen_ref(v["model.bundled"], v["model.custom"]), dataset=v["data.ref"],
            peft_type=peft_type, method_values=method_step.values_for(peft_type, v), shape=shape or "auto",
            mapping=data_step.mapping_from(shape, v), model_tasks=info.tasks if info is not None else (),
            trust_remote_code=v["model.trust"], precision=v["model.precision"],
            quantization=v["model.quantization"], val_fraction=v["data.val_fraction"],
            dedupe=bool(v["data.dedupe"]), max_length=v["data.max_length"] or 512,
            **train_step.training_choices(v),
        ))

    def review(data):
        try:
            return e.updates({"train.yaml": spec_from(e.values(data)).to_yaml(), "train.message": ""})
        except Exception as exc:
            return e.updates({"train.message": data_step.error_box(str(exc))})

    def submit(data):
        try:
            run_id = runs.create_run(ctx, spec_from(e.values(data)))
        except Exception as exc:
            return e.updates({"train.message": data_step.error_box(str(exc))})
        # Submitted, the wizard is no longer a draft: a reload shows the run, and a fresh wizard.
        return e.updates({"page.tabs": gr.Tabs(selected="run"), "train.message": f"Run #{run_id} queued.",
                          "run.picker": gr.Dropdown(choices=run_view.run_choices(ctx), value=run_id),
                          "run.seen": None, STORED: draft_ui.EMPTY})

    spec_inputs, previewed = e.of(SPEC, "method.choice", method_fields), e.of("train.yaml", "train.message")
    e["method.next"].click(review, spec_inputs, previewed)
    # one spec preview for all the fields a preset or a restore sets
    gr.on([e[name].change for name in train_step.VALUES], review, spec_inputs, previewed, trigger_mode="always_last")

    e["train.submit"].click(submit, spec_inputs, e.of("page.tabs", "train.message", "run.picker", "run.seen", STORED)
                            ).then(None, e["run.picker"], None, js=run_view.SET_URL_JS)

    # the draft: every change saved to the browser; on load, values back, then the model and data redone
    fields = draft_ui.fields(e, restored=[*model_step.FIELDS, *data_step.FIELDS, *method_step.fields(),
                                          *train_step.FIELDS, "wizard.step"], derived=list(DERIVED))

    def on_step_clicked(evt: gr.SelectData):
        return evt.index if isinstance(evt.index, int) else gr.skip()

    e["wizard.walkthrough"].select(on_step_clicked, None, e["wizard.step"])

    def save(data):
        v = e.values(data)
        return draft_ui.save(fields, v[STORED], v)

    # always_last: one save in flight at a time and the newest values last, so a slow reply to an
    # earlier keystroke can never overwrite a later draft.
    gr.on([e[name].change for name in fields.names], save, e.of(STORED, fields.names), e[STORED],
          queue=False, show_progress="hidden", api_visibility="private", trigger_mode="always_last")

    def restore(draft, fresh_page: bool) -> dict[str, Any]:
        step = draft_ui.stored(fields, draft).get("wizard.step")
        walkthrough = {"wizard.walkthrough": gr.Walkthrough(selected=step)} if step is not None else {}
        return e.updates({**draft_ui.restore(fields, draft, fresh_page), **walkthrough, LOADED: draft})

    def restore_on_load(draft):
        return restore(draft, fresh_page=True)

    def restore_reused(draft):
        return restore(draft, fresh_page=False)

    def recheck(data):
        v = e.values(data)
        values = draft_ui.stored(fields, v[LOADED])
        if not values.get("model.checked") and not values.get("wizard.step"):
            return gr.skip()  # the model was never checked
        return e.updates(model_step.check_model(v["model.bundled"], v["model.custom"], v["model.trust"], models_dir))

    def repreview(data):
        v = e.values(data)
        if not v["data.ref"]:
            return gr.skip()
        values = draft_ui.stored(fields, v[LOADED])
        shape = values.get("data.shape")
        return e.updates(show(v, shape or None, data_step.mapping_from(shape, values) or None))

    e["model.start_over"].click(None, None, None, js=draft_ui.START_OVER_JS)

    restore_outputs = e.of(fields.restored, "wizard.walkthrough", LOADED)

    def redo_derived(restored):
        """After the fields are back: the model check, the data preview and the counts, redone."""
        restored.then(recheck, e.of(LOADED, *CHECK), e.of(CHECKED)).then(
            repreview, e.of(LOADED, *PREVIEW_INPUTS), preview_outputs).then(**count_event).then(**estimate_event)

    redo_derived(demo.load(restore_on_load, e[STORED], restore_outputs, api_visibility="private"))

    def open_in_wizard(trigger) -> None:
        """``trigger`` has just stored a draft: put it in the wizard (every field) and bring it to the front."""
        cleared = trigger.then(lambda: e.updates(data_step.render_preview(None)), None, preview_outputs)
        redo_derived(cleared.then(restore_reused, e[STORED], restore_outputs).then(
            lambda: gr.Tabs(selected="new"), None, e["page.tabs"]).then(None, None, None, js=run_view.CLEAR_URL_JS))

    return open_in_wizard


MERGE_PROGRESS = gr.Progress()  # Gradio finds it as a default argument and feeds it the build's stages


def _wire_run_view(ctx, demo, e: Elements) -> None:
    drawn = e.of(run_view.DRAWN)

    def on_load(draft, request: gr.Request):
        raw = (request.query_params.get("run") if request is not None else None) or ""
        # Reopened without a link: the run that is training comes to the front, unless a half-filled
        # wizard is waiting; the newest run is ready in the run view either way.
        active = run_view.active_run(ctx)
        if raw:  # a link shows its run, or says why it cannot, whatever else is waiting
            run_id, missing = run_view.linked_run(ctx, raw)
            return e.updates({"run.picker": gr.Dropdown(choices=run_view.run_choices(ctx), value=run_id),
                              "page.tabs": gr.Tabs(selected="run"), "run.message": missing or gr.skip()})
        run_id = active or run_view.latest_run(ctx)
        front = active is not None and not draft_service.has_values(draft)
        return e.updates({"run.picker": gr.Dropdown(choices=run_view.run_choices(ctx), value=run_id),
                          "page.tabs": gr.Tabs(selected="run") if front else gr.skip()})

    # A link (?run=N) wins over a waiting draft; only after this has placed the page may a tab change
    # rewrite the address (run_view.CLEAR_URL_JS).
    demo.load(on_load, e[STORED], e.of("run.picker", "page.tabs", "run.message"), api_visibility="private").then(
        None, None, None, js=run_view.URL_READY_JS)

    def switch(run_id):
        # Switching to a run clears the last run's message ("Run #3: cancelling.", a merge error).
        return e.updates({**run_view.draw(ctx, run_id, None), "run.message": "" if run_id else gr.skip()})

    def tick(data):
        v = e.values(data)
        return e.updates(run_view.draw(ctx, v["run.picker"], v["run.seen"]))

    def merge(run_id, progress=MERGE_PROGRESS):
        return e.updates(run_view.prepare_merged(ctx, run_id, progress))

    picker = e["run.picker"]
    picker.change(switch, picker, e.of(run_view.DRAWN, "run.message")).then(
        None, None, None, js=run_view.FOLLOW_LOG_AGAIN_JS)
    picker.input(None, picker, None, js=run_view.SET_URL_JS)
    e["run.refresh"].click(lambda: gr.Dropdown(choices=run_view.run_choices(ctx)), None, picker)
    e["run.timer"].tick(tick, e.of("run.picker", "run.seen"), drawn, api_visibility="private",
                        show_progress="hidden", queue=False).then(None, None, None, js=run_view.FOLLOW_LOG_JS)
    e["run.cancel"].click(lambda run_id: run_view.cancel(ctx, run_id), picker, e["run.message"])
    e["run.merge"].click(merge, picker, e.of("run.message", "run.merge", "run.merged"))


def _wire_address(e: Elements) -> None:
    """The address says which run is in front while the run view is (``?run=N``), and nothing otherwise."""
    e["page.tab.run"].select(None, e["run.picker"], None, js=run_view.SET_URL_JS)
    for name in ("page.tab.new", "page.tab.runs", "page.tab.datasets", "page.tab.playground"):
        e[name].select(None, None, None, js=run_view.CLEAR_URL_JS)


def _wire_runs(ctx, demo, e: Elements, open_in_wizard) -> None:
    tab = e["page.tab.runs"]

    def refresh(data):
        v = e.values(data)
        frame, choices = runs_tab.table_and_choices(ctx, v["runs.status"], v["runs.text"])
        return e.updates({"runs.table": frame, "runs.selected": gr.Dropdown(choices=choices),
                          "runs.compare": gr.Dropdown(choices=choices)})

    refreshed = dict(fn=refresh, inputs=e.of("runs.status", "runs.text"),
                     outputs=e.of("runs.table", "runs.selected", "runs.compare"))
    for ev in (e["runs.refresh"].click, e["runs.status"].change, e["runs.text"].submit):
        ev(**refreshed)
    demo.load(**refreshed, api_visibility="private")
    tab.select(**refreshed, api_visibility="private")

    def delete(data):
        v = e.values(data)
        return runs_tab.delete(ctx, v["runs.selected"], v["runs.confirm"])

    selected = e["runs.selected"]
    selected.change(lambda run_id: e.updates(runs_tab.detail(ctx, run_id)), selected,
                    e.of("runs.config", "runs.download_yaml", "runs.resume_group"))
    e["runs.delete"].click(delete, e.of("runs.selected", "runs.confirm"), e["runs.message"]).then(**refreshed)

    def resume(data):
        v = e.values(data)
        return e.updates(runs_tab.resume(ctx, v["runs.selected"], v["runs.more_steps"]))

    e["runs.resume"].click(resume, e.of("runs.selected", "runs.more_steps"),
                           e.of("runs.message", "runs.resume_group")).then(**refreshed)

    # "New run from this one" redoes the model check and data preview in the wizard, which can take
    # a while on a busy CPU: say so at once (unqueued) and keep saying it until the wizard opens.
    def reuse(run_id):
        stored_draft, message = runs_tab.draft_from_run(ctx, run_id)
        return e.updates({STORED: stored_draft, "runs.message": message or gr.skip()})

    def open_run(run_id):
        return e.updates({"page.tabs": gr.Tabs(selected="run"),
                          "run.picker": gr.Dropdown(choices=run_view.run_choices(ctx), value=run_id)})

    busy = e["runs.reuse"].click(lambda run_id: t("runs.reuse.busy", run=run_id) if run_id else gr.skip(), selected,
                                 e["runs.message"], queue=False, show_progress="hidden")
    open_in_wizard(busy.then(reuse, selected, e.of(STORED, "runs.message")))
    tab.select(lambda: "", None, e["runs.message"], queue=False, show_progress="hidden")  # a message is for its moment
    e["runs.open_run"].click(open_run, selected, e.of("page.tabs", "run.picker")).then(
        None, e["run.picker"], None, js=run_view.SET_URL_JS)


def _wire_datasets(ctx, e: Elements) -> None:
    listed = dict(fn=lambda current: e.updates(datasets_tab.listing(ctx, current)), inputs=e["datasets.selected"],
                  outputs=e.of("datasets.table", "datasets.selected"))
    # Read afresh whenever the tab is opened: uploads and runs change what it shows.
    e["page.tab.datasets"].select(**listed, api_visibility="private")
    e["datasets.refresh"].click(**listed)
    e["page.tab.datasets"].select(lambda: "", None, e["datasets.message"], queue=False, show_progress="hidden")

    def delete(data):
        v = e.values(data)
        return datasets_tab.delete(ctx, v["datasets.selected"], v["datasets.confirm"])

    e["datasets.delete"].click(delete, e.of("datasets.selected", "datasets.confirm"), e["datasets.message"]).then(
        **listed)


def _wire_playground(ctx, demo, e: Elements, pg) -> None:
    def choices(current):
        return playground_tab.run_choices(ctx, current)

    run, tab = e["play.run"], e["page.tab.playground"]
    # Refreshed whenever the tab is opened: a run that finished meanwhile is there (and picked).
    e["play.refresh"].click(choices, run, run)
    demo.load(choices, run, run, api_visibility="private")
    tab.select(choices, run, run, api_visibility="private")
    run.change(lambda run_id: e.updates(playground_tab.show_for_run(ctx, run_id)), run, e.of(playground_tab.FOR_RUN))

    def respond(data):
        v = e.values(data)
        for reply in playground_tab.respond(pg, v["play.run"], v["play.prompt"], v["play.base"], v["play.tuned"],
                                            v["play.max_new_tokens"], v["play.temperature"], v["play.top_p"]):
            yield e.updates(reply)

    inputs = e.of("play.run", "play.prompt", "play.base", "play.tuned", "play.max_new_tokens", "play.temperature",
                  "play.top_p")
    for trigger in (e["play.generate"].click, e["play.prompt"].submit):
        trigger(respond, inputs, e.of(playground_tab.REPLY), show_progress="minimal")
    e["play.clear"].click(lambda: e.updates(playground_tab.clear()), None, e.of("play.base", "play.tuned", "play.status"))


__all__ = ["build_app", "build_page", "labels"]
