"""The studio page: a four-step wizard, the run view, the runs table and the playground.

This module only lays the tabs out and wires events; each step/tab lives in its own module and
every callback calls into ``app.services``. State lives in the registry, not in the page.
"""

from __future__ import annotations

import gradio as gr

from app.services import draft as draft_service
from app.services import playground as playground_service
from app.services import runs
from app.services.context import Context
from app.services.data_preview import label_names, preview, roles_for
from app.services.wizard import WizardChoices, build_spec, task_for
from app.ui import draft as draft_ui
from app.ui import labels
from app.ui.labels import t
from app.ui.steps import data as data_step
from app.ui.steps import method as method_step
from app.ui.steps import model as model_step
from app.ui.steps import train as train_step
from app.ui.tabs import playground as playground_tab
from app.ui.tabs import run_view
from app.ui.tabs import runs as runs_tab


def build_app(ctx: Context) -> gr.Blocks:
    pg = playground_service.Playground(ctx)
    # delete_cache: Gradio's copies of uploads and outputs older than a day go, checked hourly.
    with gr.Blocks(title=t("title"), analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
        with gr.Column(elem_classes="ts-header"):
            gr.Markdown(f"# {t('title')}\n{t('tagline')}")
            gr.HTML(run_view.CHART_MARKERS, elem_id="ts-chart-markers")  # point markers for both loss charts
        with gr.Tabs(selected="new") as tabs:
            with gr.Tab(t("tab.new"), id="new") as new_tab_item, gr.Walkthrough(selected=0) as wizard:
                with gr.Step(t("step.model"), id=0):
                    ms = model_step.build()
                with gr.Step(t("step.data"), id=1):
                    ds = data_step.build()
                with gr.Step(t("step.method"), id=2):
                    me = method_step.build()
                with gr.Step(t("step.train"), id=3):
                    ts = train_step.build(me.choice.value)
            with gr.Tab(t("tab.run"), id="run") as run_tab_item:
                rv = run_view.build(ctx)
            with gr.Tab(t("tab.runs"), id="runs") as runs_tab_item:
                rt = runs_tab.build(ctx)
            with gr.Tab(t("tab.playground"), id="playground") as play_tab_item:
                pt = playground_tab.build()

        stored = draft_ui.browser_state(ctx.settings.home)
        open_in_wizard = _wire_wizard(ctx, demo, wizard, tabs, ms, ds, me, ts, rv, stored)
        _wire_run_view(ctx, demo, tabs, rv, stored)
        run_tab_item.select(None, rv.picker, None, js=run_view.SET_URL_JS)
        for item in (new_tab_item, runs_tab_item, play_tab_item):
            item.select(None, None, None, js=run_view.CLEAR_URL_JS)
        _wire_runs(ctx, demo, tabs, rt, rv, runs_tab_item, stored, open_in_wizard)
        _wire_playground(ctx, demo, pt, pg, play_tab_item)
    return demo


def _go(step: int):
    """Move the wizard to ``step`` and remember it (outputs: the walkthrough and its step state)."""
    return lambda: (gr.Walkthrough(selected=step), step)


def _wire_wizard(ctx, demo, wizard, tabs, ms, ds, me, ts, rv, stored):
    at_step = gr.State(0)
    nav = [wizard, at_step]
    models_dir = ctx.settings.models_dir
    method_inputs = [me.choice, *me.inputs]

    def task_of(info, shape):
        return task_for(shape, info.tasks if info is not None else ())

    def check(bundled, custom, trust):
        return model_step.check_model(bundled, custom, trust, models_dir)

    def count(info, shape, ref, *rest):
        # The data's classes size a classifier's head, so the count matches the run's (engine's rule).
        roles, (peft_type, *values) = rest[: data_step.MAX_ROLES], rest[data_step.MAX_ROLES :]
        classes = label_names(ctx, ref, shape, data_step.mapping_from(roles_for(shape), roles))
        return method_step.count_text(info, peft_type, method_step.values_for(me, peft_type, values),
                                      task_of(info, shape), classes)

    estimate_inputs = [ms.state, me.trainable, ms.precision, ms.quantization, ms.batch, ms.seq_len, me.choice, ds.shape]
    estimate_outputs = [ms.estimate, ms.fit]

    def estimate_rows(*values):
        return model_step.estimate_rows(*values, embedded=ctx.settings.embedded_broker)
    count_event = dict(fn=count, inputs=[ms.state, ds.shape, ds.ref, *ds.roles, *method_inputs],
                       outputs=[me.trainable, me.count])

    checked = ms.check.click(check, [ms.bundled, ms.custom, ms.trust], [ms.state, ms.info])
    checked.then(**count_event).then(estimate_rows, estimate_inputs, estimate_outputs)
    for comp in (ms.precision, ms.quantization, ms.batch, ms.seq_len):
        comp.change(estimate_rows, estimate_inputs, estimate_outputs)

    def next_from_model(info, bundled, custom, trust):
        info, text, go_on = model_step.next_from_model(info, bundled, custom, trust, models_dir)
        return (info, text, *(_go(1)() if go_on else (gr.skip(), gr.skip())))

    ms.next.click(next_from_model, [ms.state, ms.bundled, ms.custom, ms.trust], [ms.state, ms.info, *nav]).then(
        **count_event).then(estimate_rows, estimate_inputs, estimate_outputs)

    # data step
    def preview_of(ref, info, shape, mapping, max_length, val_fraction, dedupe):
        if not ref:
            return data_step.render_preview(None)
        try:
            prev = preview(ctx, ref, shape=shape, mapping=mapping, tokenizer=getattr(info, "tokenizer", None),
                           max_length=int(max_length or 512))
        except Exception as exc:
            return data_step.render_preview(None, data_step.error_box(str(exc)))
        return data_step.render_preview(prev, val_fraction=val_fraction, dedupe=dedupe)

    def show(ref, info, shape, max_length, val_fraction, dedupe, *role_values, user_mapping=False):
        mapping = data_step.mapping_from(roles_for(shape), role_values) if user_mapping and shape else None
        return preview_of(ref, info, shape if user_mapping else None, mapping, max_length, val_fraction, dedupe)

    preview_outputs = [ds.status, ds.shape, *ds.roles, ds.preview, ds.stats, ds.histogram]
    preview_inputs = [ds.ref, ms.state, ds.shape, ds.max_length, ds.val_fraction, ds.dedupe, *ds.roles]

    def on_upload(path):
        import os

        return data_step.register(ctx, path, os.path.basename(path) if path else None)

    ds.upload.upload(on_upload, ds.upload, [ds.ref, ds.status]).then(
        lambda ref, *rest: show(ref, *rest) if ref else [gr.skip()] * len(preview_outputs),
        preview_inputs, preview_outputs,
    )
    ds.bundled.input(lambda name: data_step.register_demo(ctx, name), ds.bundled, [ds.ref, ds.status]).then(
        lambda ref, *rest: show(ref, *rest) if ref else [gr.skip()] * len(preview_outputs),
        preview_inputs, preview_outputs,
    )
    def reshape(ref, info, shape, max_length, val_fraction, dedupe):
        return preview_of(ref, info, shape, None, max_length, val_fraction, dedupe)

    ds.shape.input(reshape, [ds.ref, ms.state, ds.shape, ds.max_length, ds.val_fraction, ds.dedupe], preview_outputs)
    ds.val_fraction.release(lambda *a: show(*a, user_mapping=True), preview_inputs, preview_outputs)
    ds.dedupe.input(lambda *a: show(*a, user_mapping=True), preview_inputs, preview_outputs)

    for role in ds.roles:
        role.input(lambda *a: show(*a, user_mapping=True), preview_inputs, preview_outputs)

    def next_from_data(ref, path):
        ref, refusal = data_step.next_from_data(ctx, ref, path)
        return (ref, gr.skip(), gr.skip(), refusal) if refusal else (ref, *_go(2)(), gr.skip())

    ds.back.click(_go(0), None, nav)
    ds.next.click(next_from_data, [ds.ref, ds.upload], [ds.ref, *nav, ds.status]).then(**count_event).then(
        estimate_rows, estimate_inputs, estimate_outputs)

    # method step
    me.choice.change(lambda pt: method_step.show_method(me, pt), me.choice,
                     [*me.groups.values(), me.summary]).then(**count_event).then(
        estimate_rows, estimate_inputs, estimate_outputs)
    for comp in me.inputs:
        comp.change(**count_event)
    me.back.click(_go(1), None, nav)
    me.next.click(_go(3), None, nav)

    # train step
    ts.preset.input(train_step.apply_preset, [ts.preset, me.choice], ts.preset_outputs())
    # The learning rate follows the method (unless typed over); its note/warning follows both.
    me.choice.change(train_step.follow_method, [me.choice, ts.lr, ts.rate_method], [ts.lr, ts.rate_method],
                     show_progress="hidden")
    gr.on([me.choice.change, ts.lr.change], train_step.learning_rate_note, [me.choice, ts.lr], ts.lr_note,
          show_progress="hidden")
    ts.back.click(_go(2), None, nav)

    submit_inputs = [ms.state, ms.bundled, ms.custom, ms.trust, ms.precision, ms.quantization, ds.ref, ds.shape,
                     ds.val_fraction, ds.dedupe, ds.max_length, *ds.roles, *method_inputs, *ts.values()]
    n_roles, n_method = len(ds.roles), len(method_inputs)

    def spec_from(info, bundled, custom, trust, precision, quantization, ref, shape, val_fraction, dedupe, max_length,
                  *rest):
        """The RunSpec for the wizard's current values (raises with a message naming the field)."""
        role_values = rest[:n_roles]
        peft_type, *method_values = rest[n_roles:n_roles + n_method]
        (name, epochs, lr, batch, max_steps, grad_accum, warmup, scheduler, weight_decay, eval_every,
         checkpoint_every, seed) = rest[n_roles + n_method:]
        if not ref:
            raise ValueError("data: no dataset yet; go back to step 2 and upload a file or pick a demo")
        return build_spec(WizardChoices(
            name=name, model=model_step.chosen_ref(bundled, custom), dataset=ref, peft_type=peft_type,
            method_values=method_step.values_for(me, peft_type, tuple(method_values)),
            shape=shape or "auto", mapping=data_step.mapping_from(roles_for(shape), role_values) if shape
            else {}, model_tasks=info.tasks if info is not None else (), trust_remote_code=trust,
            precision=precision, quantization=quantization, val_fraction=val_fraction, dedupe=bool(dedupe),
            max_length=max_length or 512, epochs=epochs, learning_rate=lr, batch_size=batch,
            max_steps=max_steps or 0, grad_accum=grad_accum, warmup_steps=warmup, scheduler=scheduler,
            weight_decay=weight_decay, eval_every=eval_every, checkpoint_every=checkpoint_every, seed=seed,
        ))

    def review(*values):
        try:
            return spec_from(*values).to_yaml(), ""
        except Exception as exc:
            return gr.skip(), data_step.error_box(str(exc))

    def submit(*values):
        try:
            run_id = runs.create_run(ctx, spec_from(*values))
        except Exception as exc:
            return gr.skip(), data_step.error_box(str(exc)), gr.skip(), gr.skip(), gr.skip()
        # Submitted, the wizard is no longer a draft: a reload shows the run, and a fresh wizard.
        return (gr.Tabs(selected="run"), f"Run #{run_id} queued.",
                gr.Dropdown(choices=run_view.run_choices(ctx), value=run_id), None, draft_ui.EMPTY)

    me.next.click(review, submit_inputs, [ts.yaml, ts.message])
    for comp in ts.values():
        comp.change(review, submit_inputs, [ts.yaml, ts.message])

    ts.submit.click(submit, submit_inputs, [tabs, ts.message, rv.picker, rv.seen, stored]).then(
        None, rv.picker, None, js=run_view.SET_URL_JS
    )

    # the draft: every change saved to the browser; on load, values back, then the model and data redone
    fields = draft_ui.fields(ms, ds, me, ts, at_step)
    loaded = gr.State(None)  # the draft as it was at load: saving starts again as soon as values come back

    def on_step_clicked(evt: gr.SelectData):
        return evt.index if isinstance(evt.index, int) else gr.skip()

    wizard.select(on_step_clicked, None, at_step)
    # always_last: one save in flight at a time and the newest values last, so a slow reply to an
    # earlier keystroke can never overwrite a later draft.
    gr.on([c.change for c in fields.components], lambda current, *v: draft_ui.save(fields, current, *v),
          [stored, *fields.components], stored,
          queue=False, show_progress="hidden", api_visibility="private", trigger_mode="always_last")

    def restore(draft, fresh_page=True):
        step = draft_ui.stored(fields, draft).get("wizard.step")
        return [*draft_ui.restore(fields, draft, fresh_page),
                gr.Walkthrough(selected=step) if step is not None else gr.skip(), draft]

    def recheck(draft, bundled, custom, trust):
        values = draft_ui.stored(fields, draft)
        checked = values.get("model.info", "") not in ("", t("model.info.empty"))
        if not checked and not values.get("wizard.step"):
            return gr.skip(), gr.skip()  # the model was never checked
        return check(bundled, custom, trust)

    def repreview(draft, ref, info, max_length, val_fraction, dedupe):
        if not ref:
            return [gr.skip()] * len(preview_outputs)
        values = draft_ui.stored(fields, draft)
        shape = values.get("data.shape")
        roles = [values.get(f"data.role.{i}") for i in range(len(ds.roles))]
        mapping = data_step.mapping_from(roles_for(shape), tuple(roles)) if shape else None
        return preview_of(ref, info, shape or None, mapping or None, max_length, val_fraction, dedupe)

    ms.start_over.click(None, None, None, js=draft_ui.START_OVER_JS)

    restore_outputs = [*fields.restore_outputs(), wizard, loaded]

    def redo_derived(restored):
        """After the fields are back: the model check, the data preview and the counts, redone."""
        restored.then(recheck, [loaded, ms.bundled, ms.custom, ms.trust], [ms.state, ms.info]).then(
            repreview, [loaded, ds.ref, ms.state, ds.max_length, ds.val_fraction, ds.dedupe], preview_outputs).then(
            **count_event).then(estimate_rows, estimate_inputs, estimate_outputs)

    redo_derived(demo.load(restore, stored, restore_outputs, api_visibility="private"))

    def open_in_wizard(trigger) -> None:
        """``trigger`` has just stored a draft: put it in the wizard (every field) and bring it to the front."""
        cleared = trigger.then(lambda: data_step.render_preview(None), None, preview_outputs)
        redo_derived(cleared.then(lambda draft: restore(draft, fresh_page=False), stored, restore_outputs).then(
            lambda: gr.Tabs(selected="new"), None, tabs).then(None, None, None, js=run_view.CLEAR_URL_JS))

    return open_in_wizard


MERGE_PROGRESS = gr.Progress()  # Gradio finds it as a default argument and feeds it the build's stages


def _wire_run_view(ctx, demo, tabs, rv, stored) -> None:
    outputs = [rv.header, rv.progress, rv.chart, rv.log, rv.cancel, rv.download, rv.merge, rv.merged, rv.seen]

    def on_load(draft, request: gr.Request):
        raw = (request.query_params.get("run") if request is not None else None) or ""
        # Reopened without a link: the run that is training comes to the front, unless a half-filled
        # wizard is waiting; the newest run is ready in the run view either way.
        active = run_view.active_run(ctx)
        if raw:  # a link shows its run, or says why it cannot, whatever else is waiting
            run_id, missing = run_view.linked_run(ctx, raw)
            return (gr.Dropdown(choices=run_view.run_choices(ctx), value=run_id), gr.Tabs(selected="run"),
                    missing or gr.skip())
        run_id = active or run_view.latest_run(ctx)
        front = active is not None and not draft_service.has_values(draft)
        return (gr.Dropdown(choices=run_view.run_choices(ctx), value=run_id),
                gr.Tabs(selected="run") if front else gr.skip(), gr.skip())

    # A link (?run=N) wins over a waiting draft; only after this has placed the page may a tab change
    # rewrite the address (run_view.CLEAR_URL_JS).
    demo.load(on_load, stored, [rv.picker, tabs, rv.message], api_visibility="private").then(
        None, None, None, js=run_view.URL_READY_JS)
    # Switching to a run clears the last run's message ("Run #3: cancelling.", a merge error).
    rv.picker.change(lambda rid: [*run_view.draw(ctx, rid, None), "" if rid else gr.skip()], rv.picker,
                     [*outputs, rv.message]).then(
        None, None, None, js=run_view.FOLLOW_LOG_AGAIN_JS)
    rv.picker.input(None, rv.picker, None, js=run_view.SET_URL_JS)
    rv.refresh.click(lambda: gr.Dropdown(choices=run_view.run_choices(ctx)), None, rv.picker)
    rv.timer.tick(lambda rid, seen: run_view.draw(ctx, rid, seen), [rv.picker, rv.seen], outputs,
                  api_visibility="private", show_progress="hidden", queue=False).then(
        None, None, None, js=run_view.FOLLOW_LOG_JS)
    rv.cancel.click(lambda rid: run_view.cancel(ctx, rid), rv.picker, rv.message)
    rv.merge.click(lambda rid, progress=MERGE_PROGRESS: run_view.prepare_merged(ctx, rid, progress), rv.picker,
                   [rv.message, rv.merge, rv.merged])


def _wire_runs(ctx, demo, tabs, rt, rv, tab_item, stored, open_in_wizard) -> None:
    def refresh(status, text):
        frame, choices = runs_tab.table_and_choices(ctx, status, text)
        return frame, gr.Dropdown(choices=choices), gr.Dropdown(choices=choices)

    refresh_outputs = [rt.table, rt.selected, rt.compare]
    for ev in (rt.refresh.click, rt.status.change, rt.text.submit):
        ev(refresh, [rt.status, rt.text], refresh_outputs)
    demo.load(refresh, [rt.status, rt.text], refresh_outputs, api_visibility="private")
    tab_item.select(refresh, [rt.status, rt.text], refresh_outputs, api_visibility="private")
    rt.selected.change(lambda rid: runs_tab.detail(ctx, rid), rt.selected, [rt.config, rt.download_yaml])
    rt.delete.click(lambda rid, ok: runs_tab.delete(ctx, rid, ok), [rt.selected, rt.confirm], rt.message).then(
        refresh, [rt.status, rt.text], refresh_outputs)
    # "New run from this one" redoes the model check and data preview in the wizard, which can take
    # a while on a busy CPU: say so at once (unqueued) and keep saying it until the wizard opens.
    def reuse(rid):
        stored_draft, message = runs_tab.draft_from_run(ctx, rid)
        return stored_draft, message or gr.skip()

    busy = rt.reuse.click(lambda rid: t("runs.reuse.busy", run=rid) if rid else gr.skip(), rt.selected,
                          rt.message, queue=False, show_progress="hidden")
    open_in_wizard(busy.then(reuse, rt.selected, [stored, rt.message]))
    tab_item.select(lambda: "", None, rt.message, queue=False, show_progress="hidden")  # a message is for its moment
    rt.open_run.click(lambda rid: (gr.Tabs(selected="run"), gr.Dropdown(choices=run_view.run_choices(ctx),
                                                                         value=rid)),
                      rt.selected, [tabs, rv.picker]).then(None, rv.picker, None, js=run_view.SET_URL_JS)


def _wire_playground(ctx, demo, pt, pg, tab_item) -> None:
    def choices(current):
        return playground_tab.run_choices(ctx, current)

    # Refreshed whenever the tab is opened: a run that finished meanwhile is there (and picked).
    pt.refresh.click(choices, pt.run, pt.run)
    demo.load(choices, pt.run, pt.run, api_visibility="private")
    tab_item.select(choices, pt.run, pt.run, api_visibility="private")
    pt.run.change(lambda rid: playground_tab.show_for_run(ctx, rid), pt.run, pt.show_outputs())

    def respond(rid, prompt, base, tuned, n, temp, top):
        yield from playground_tab.respond(pg, rid, prompt, base, tuned, n, temp, top)

    inputs = [pt.run, pt.prompt, pt.base, pt.tuned, pt.max_new_tokens, pt.temperature, pt.top_p]
    for trigger in (pt.generate.click, pt.prompt.submit):
        trigger(respond, inputs, pt.respond_outputs(), show_progress="minimal")
    pt.clear.click(playground_tab.clear, None, [pt.base, pt.tuned, pt.status])


__all__ = ["build_app", "labels"]
