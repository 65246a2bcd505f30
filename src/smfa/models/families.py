"""Model-family adapters: everything that differs between HF multimodal families lives here, in one small
class per family, registered by name and chosen from ``config.model_type`` — never by string tests on a
checkpoint name scattered through the code.

An adapter knows: the chat format (through the processor's chat template), how the answer is appended and
terminated, how examples with and without images are encoded and batched, which *language-model* linear
layers LoRA targets, and which modules are the vision tower and the projector.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import torch

from smfa.errors import ModelError

_FAMILIES: dict[str, type[FamilyAdapter]] = {}


def register_family(cls: type[FamilyAdapter]) -> type[FamilyAdapter]:
    """Class decorator: register a family adapter under ``cls.name``."""
    if cls.name in _FAMILIES:
        raise ValueError(f"family {cls.name!r} registered twice")
    _FAMILIES[cls.name] = cls
    return cls


def family_names() -> list[str]:
    return sorted(_FAMILIES)


def supported_model_types() -> list[str]:
    return sorted({t for cls in _FAMILIES.values() for t in cls.model_types})


def family_for_model_type(model_type: str) -> FamilyAdapter:
    for cls in _FAMILIES.values():
        if model_type in cls.model_types:
            return cls()
    raise ModelError(
        f"model type {model_type!r} is not supported by any family adapter "
        f"(supported: {', '.join(supported_model_types())}); add one in smfa/models/families.py"
    )


def family_for(model_or_config: Any) -> FamilyAdapter:
    """The adapter for a model or config (by ``config.model_type``)."""
    config = getattr(model_or_config, "config", model_or_config)
    return family_for_model_type(getattr(config, "model_type", ""))


class FamilyAdapter:
    """Base adapter: a LLaVA-style model whose processor has a chat template and expands ``<image>``."""

    name: ClassVar[str] = ""
    model_types: ClassVar[tuple[str, ...]] = ()
    # Module-path pieces: LoRA targets must sit under the language model, never the vision tower
    # (CLIP/SigLIP towers also have q_proj/v_proj).
    language_model_pattern: ClassVar[str] = r"language_model"
    lora_module_names: ClassVar[tuple[str, ...]] = (
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
    )
    vision_module_prefixes: ClassVar[tuple[str, ...]] = ("model.vision_tower",)
    projector_module_prefixes: ClassVar[tuple[str, ...]] = ("model.multi_modal_projector",)
    answer_prefix: ClassVar[str] = " "  # text between the generation prompt and the answer
    # Image tensors concatenated along dim 0 across a batch (examples without an image add nothing).
    image_keys: ClassVar[tuple[str, ...]] = ("pixel_values", "image_sizes")

    # ---- chat format -------------------------------------------------------------------------
    def messages(self, question: str, has_image: bool) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = [{"type": "image"}] if has_image else []
        content.append({"type": "text", "text": question})
        return [{"role": "user", "content": content}]

    def prompt(self, processor: Any, question: str, has_image: bool) -> str:
        return processor.apply_chat_template(
            self.messages(question, has_image), add_generation_prompt=True, tokenize=False
        )

    def end_text(self, processor: Any) -> str:
        """The token that ends an assistant turn (learned as part of the answer; generation stops on it)."""
        return processor.tokenizer.eos_token

    def end_token_ids(self, processor: Any) -> list[int]:
        ids = processor.tokenizer.convert_tokens_to_ids([self.end_text(processor)])
        eos = processor.tokenizer.eos_token_id
        return sorted({i for i in [*ids, eos] if i is not None})

    # ---- encoding -----------------------------------------------------------------------------
    def _process(self, processor: Any, text: str, image: Any) -> dict[str, torch.Tensor]:
        kwargs: dict[str, Any] = {"text": [text], "return_tensors": "pt"}
        if image is not None:
            kwargs["images"] = [image]
        return dict(processor(**kwargs))

    def encode(self, processor: Any, question: str, image: Any = None, answer: str | None = None) -> dict[str, torch.Tensor]:
        """One example. With ``answer``: ``labels`` are -100 everywhere except the answer and end token."""
        prompt = self.prompt(processor, question, image is not None)
        if answer is None:
            enc = self._process(processor, prompt, image)
            return {k: (v[0] if k in ("input_ids", "attention_mask") else v) for k, v in enc.items()}
        full = prompt + self.answer_prefix + answer + self.end_text(processor)
        enc = self._process(processor, full, image)
        prompt_ids = self._process(processor, prompt, image)["input_ids"][0]
        ids = enc["input_ids"][0]
        n_prompt = _common_prefix_len(prompt_ids, ids)
        labels = ids.clone()
        labels[:n_prompt] = -100
        out = {k: (v[0] if k in ("input_ids", "attention_mask") else v) for k, v in enc.items()}
        out["labels"] = labels
        return out

    def collate(self, examples: list[dict[str, torch.Tensor]], pad_token_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
        """Pad token tensors (labels with -100) and concatenate image tensors of the examples that have one."""
        width = max(int(e["input_ids"].shape[0]) for e in examples)
        batch: dict[str, torch.Tensor] = {}
        for key, fill in (("input_ids", pad_token_id), ("attention_mask", 0), ("labels", -100)):
            if key not in examples[0]:
                continue
            rows = []
            for e in examples:
                t = e[key]
                pad = torch.full((width - t.shape[0],), fill, dtype=t.dtype)
                rows.append(torch.cat([pad, t]) if padding_side == "left" else torch.cat([t, pad]))
            batch[key] = torch.stack(rows)
        for key in self.image_keys:
            parts = [e[key] for e in examples if key in e]
            if parts:
                batch[key] = torch.cat(parts, dim=0)
        return batch

    # ---- modules ------------------------------------------------------------------------------
    def lora_target_regex(self) -> str:
        """A PEFT ``target_modules`` regex matching only language-model linear layers."""
        names = "|".join(self.lora_module_names)
        return rf".*{self.language_model_pattern}.*\.({names})$"

    def lora_targets(self, model: torch.nn.Module) -> list[str]:
        """Module names the LoRA regex resolves to (all must be ``nn.Linear`` in the language model)."""
        pattern = re.compile(self.lora_target_regex())
        return [n for n, m in model.named_modules() if pattern.fullmatch(n) and isinstance(m, torch.nn.Linear)]

    def vision_modules(self, model: torch.nn.Module) -> list[str]:
        return [n for n, _ in model.named_modules() if n.startswith(self.vision_module_prefixes)]


def _common_prefix_len(a: torch.Tensor, b: torch.Tensor) -> int:
    n = min(a.shape[0], b.shape[0])
    diff = (a[:n] != b[:n]).nonzero()
    return int(diff[0]) if diff.numel() else n


@register_family
class LlavaFamily(FamilyAdapter):
    """LLaVA-1.5 (``llava-hf/llava-1.5-*``) and the built-in tiny model."""

    name = "llava"
    model_types = ("llava",)
