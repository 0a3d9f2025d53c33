"""Which task a run trains, from the shape of its data and what the model can do: the one rule.

The spec (``RunSpec.task``), the data pipeline (a run whose spec leaves the task to the data), the
wizard, the memory estimate and the data step all ask :func:`task_for`. Copies of this rule had
drifted apart: the wizard once gave pair-classification data a causal LM, and the run failed at
model load. The shape and task names are spelled here too, and imported everywhere else.
"""

from __future__ import annotations

from collections.abc import Sequence

CAUSAL_LM, SEQ_CLS, SEQ_2_SEQ_LM = "CAUSAL_LM", "SEQ_CLS", "SEQ_2_SEQ_LM"
TASKS = (CAUSAL_LM, SEQ_CLS, SEQ_2_SEQ_LM)

# The shapes a table can hold (app.data.shapes detects and checks them); a spec may also say "auto".
SHAPES = ("instruction", "chat", "prompt_completion", "text", "classification", "pair_classification")
AUTO_SHAPE = "auto"
SPEC_SHAPES = (AUTO_SHAPE, *SHAPES)
# Labelled text: trains a classification head whatever the model's own task.
CLASSIFICATION_SHAPES = ("classification", "pair_classification")
# A causal LM trains these as plain text; every other shape is rendered as a chat (with a template).
PLAIN_TEXT_SHAPES = ("text", "prompt_completion")


def is_classification(shape: str | None) -> bool:
    return shape in CLASSIFICATION_SHAPES


def task_for(shape: str | None, model_tasks: Sequence[str] = ()) -> str:
    """The task a run on data of ``shape`` trains, given the tasks the model serves (empty: unknown).

    Classification data trains a SEQ_CLS head. Everything else trains the model's generative task:
    causal LM when the model has one (or nothing is known of it), else sequence-to-sequence, else the
    model's own first task (an encoder such as MiniLM: building it as a causal LM is what made
    transformers warn "add is_decoder=True").
    """
    if is_classification(shape):
        return SEQ_CLS
    if model_tasks and CAUSAL_LM not in model_tasks:
        return SEQ_2_SEQ_LM if SEQ_2_SEQ_LM in model_tasks else model_tasks[0]
    return CAUSAL_LM


def renders_chat(task: str, shape: str | None) -> bool:
    """Whether a run of ``task`` on ``shape`` data renders its examples with a chat template (so the
    template belongs with the adapter, and the playground must prompt with the same one)."""
    return task == CAUSAL_LM and shape not in PLAIN_TEXT_SHAPES
