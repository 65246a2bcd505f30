"""Loading models for every stage: a run directory, a local HF model directory, or (only when the user asks,
with the ``hf:`` prefix) a hub id. A local path that does not exist is an error, never a hub fetch: a typo
such as ``runs/vanila`` must not download (and, with ``--trust-remote-code``, run) somebody's repository.
Weights are read with safetensors; ``trust_remote_code`` is off unless asked for."""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from smfa.errors import ModelError
from smfa.models.families import FamilyAdapter, family_for_model_type
from smfa.models.placement import Placement, place


@dataclass
class LoadedModel:
    model: torch.nn.Module
    processor: Any
    family: FamilyAdapter
    source: str  # path or hub id


HUB_PREFIX = "hf:"  # ``hf:org/name``: the one way to ask for a hub download


def hub_id(source: str | Path) -> str | None:
    """The hub id of an explicit ``hf:org/name`` request, else None (``source`` is a local path)."""
    text = str(source)
    if not text.startswith(HUB_PREFIX):
        return None
    repo = text[len(HUB_PREFIX):]
    if not repo or repo.count("/") > 1 or repo.startswith(("/", ".")):
        raise ModelError(f"{text!r} is not a hub id; write hf:ORG/NAME (e.g. hf:llava-hf/llava-1.5-7b-hf)")
    return repo


def _check_model_dir(path: Path) -> str:
    cfg = path / "config.json"
    if not cfg.is_file():
        raise ModelError(f"{path} is not a model directory (no config.json); pass a finetune run or a HF model directory")
    try:
        model_type = json.loads(cfg.read_text(encoding="utf-8")).get("model_type", "")
    except json.JSONDecodeError as exc:
        raise ModelError(f"{cfg} is corrupt (invalid JSON at line {exc.lineno}); re-create the model directory") from exc
    has_weights = any(path.glob("*.safetensors")) or (path / "model.safetensors.index.json").is_file()
    if not has_weights:
        raise ModelError(f"{path} has no safetensors weights (only safetensors are loaded); re-save the model with safe_serialization=True")
    return model_type


def model_dir_of(source: str | Path) -> Path | None:
    """A run directory keeps its weights in ``model/``; a plain HF model directory is its own."""
    path = Path(source)
    if (path / "model" / "config.json").is_file():
        return path / "model"
    if path.exists():
        return path
    return None


def load_model(
    source: str | Path,
    *,
    placement: Placement | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load (model, processor, family adapter) from a run dir, a model dir or a hub id; with ``placement``
    (:func:`smfa.models.placement.resolve_placement`), in its dtype and on its device, else as stored, on
    the CPU."""
    from transformers import AutoModelForImageTextToText

    repo = hub_id(source)
    local = None if repo is not None else model_dir_of(source)
    if local is not None:
        model_type = _check_model_dir(local)
        family = family_for_model_type(model_type)
        ref: str = str(local)
        kwargs: dict[str, Any] = {"local_files_only": True}
    elif repo is not None:
        ref, kwargs, family = repo, {}, None
    else:
        text = str(source)
        looks_like_hub = text.count("/") == 1 and not text.startswith((".", "/", "~")) and not text.endswith("/")
        hint = f" (to download from the hub, write {HUB_PREFIX}{text})" if looks_like_hub else ""
        raise ModelError(f"model {source} does not exist; pass a finetune run directory or a HF model directory{hint}")
    try:
        processor = _load_processor(ref, trust_remote_code, kwargs)
        model = AutoModelForImageTextToText.from_pretrained(
            ref, dtype=placement.dtype if placement else "auto", trust_remote_code=trust_remote_code, use_safetensors=True, **kwargs
        )
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load model from {ref}: {str(exc).splitlines()[0]}") from exc
    if family is None:
        family = family_for_model_type(model.config.model_type)
    if placement is not None:
        place(model, placement)
    return LoadedModel(model=model, processor=processor, family=family, source=ref)


def image_only_processor_class(processor_cls: type) -> type:
    """``processor_cls`` (an image-and-video processor such as Qwen2-VL's) without its video slot: smfa passes
    images only, and a video processor needs torchvision. transformers reads a processor's parts from its
    ``__init__`` signature, so the subclass's signature is what drops the slot."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        processor_cls.__init__(self, image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    # The processor's other settings stay in the signature, so that save_pretrained writes them.
    signature = inspect.signature(processor_cls.__init__)
    __init__.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p for name, p in signature.parameters.items() if name != "video_processor"])
    return type(processor_cls.__name__, (processor_cls,), {"__init__": __init__})


def _load_processor(ref: str, trust_remote_code: bool, kwargs: dict[str, Any]):
    """The model's own processor; for a family whose processor also handles video, when its video part cannot
    be loaded (torchvision missing, or no video config in the directory), the same processor without it."""
    from transformers import AutoConfig, AutoImageProcessor, AutoProcessor, AutoTokenizer
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

    try:
        return AutoProcessor.from_pretrained(ref, trust_remote_code=trust_remote_code, **kwargs)
    except (OSError, ImportError, ValueError) as exc:
        if "video" not in str(exc).lower():
            raise
        config = AutoConfig.from_pretrained(ref, trust_remote_code=trust_remote_code, **kwargs)
        processor_cls = PROCESSOR_MAPPING.get(type(config), None)
        if processor_cls is None:
            raise
    tokenizer = AutoTokenizer.from_pretrained(ref, trust_remote_code=trust_remote_code, **kwargs)
    image_processor = AutoImageProcessor.from_pretrained(ref, trust_remote_code=trust_remote_code, **kwargs)
    # The processor's own settings (e.g. LLaVA-OneVision's image tokens per tile) from its saved config.
    saved, _ = processor_cls.get_processor_dict(ref, **kwargs)
    own = set(inspect.signature(processor_cls.__init__).parameters) - {"self", "image_processor", "tokenizer",
                                                                      "video_processor", "chat_template", "kwargs"}
    return image_only_processor_class(processor_cls)(image_processor=image_processor, tokenizer=tokenizer,
                                                     chat_template=tokenizer.chat_template,
                                                     **{k: v for k, v in saved.items() if k in own})
