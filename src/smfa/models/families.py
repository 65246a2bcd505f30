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
    # The token that ends an assistant turn; None: the tokenizer's eos token.
    end_token: ClassVar[str | None] = None
    # Image tensors concatenated along dim 0 across a batch (examples without an image add nothing).
    image_keys: ClassVar[tuple[str, ...]] = ("pixel_values", "image_sizes")
    # Per-token tensors the processor returns besides input_ids/attention_mask (e.g. Gemma-3's
    # token_type_ids, Qwen2-VL's mm_token_type_ids): padded like input_ids, with 0 (= text).
    extra_token_keys: ClassVar[tuple[str, ...]] = ()

    # ---- chat format -------------------------------------------------------------------------
    def messages(self, question: str, has_image: bool) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = [{"type": "image"}] if has_image else []
        content.append({"type": "text", "text": question})
        return [{"role": "user", "content": content}]

    def prompt(self, processor: Any, question: str, has_image: bool) -> str:
        text = processor.apply_chat_template(
            self.messages(question, has_image), add_generation_prompt=True, tokenize=False
        )
        return _strip_duplicate_bos(processor.tokenizer, text)

    def end_text(self, processor: Any) -> str:
        """The token that ends an assistant turn (learned as part of the answer; generation stops on it)."""
        return self.end_token or processor.tokenizer.eos_token

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
            return self._unbatch(enc)
        full = prompt + self.answer_prefix + answer + self.end_text(processor)
        enc = self._process(processor, full, image)
        prompt_ids = self._prompt_ids(processor, prompt, image)
        ids = enc["input_ids"][0]
        n_prompt = _common_prefix_len(prompt_ids, ids)
        labels = ids.clone()
        labels[:n_prompt] = -100
        out = self._unbatch(enc)
        out["labels"] = labels
        return out

    def _prompt_ids(self, processor: Any, prompt: str, image: Any) -> torch.Tensor:
        """Token ids of the prompt alone. The image-token expansion depends only on the image's size, so the
        ids are cached per (prompt, size): bench templates repeat across thousands of rows."""
        cache = self.__dict__.setdefault("_prompt_cache", {})
        key = (id(processor), prompt, getattr(image, "size", None))
        ids = cache.get(key)
        if ids is None:
            if len(cache) > 50_000:
                cache.clear()
            ids = cache[key] = self._process(processor, prompt, image)["input_ids"][0]
        return ids

    def _unbatch(self, enc: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-token tensors lose the processor's batch dim; image tensors keep it (they are concatenated)."""
        token_keys = ("input_ids", "attention_mask", *self.extra_token_keys)
        return {k: (v[0] if k in token_keys else v) for k, v in enc.items()}

    def collate(self, examples: list[dict[str, torch.Tensor]], pad_token_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
        """Pad token tensors (labels with -100) and concatenate image tensors of the examples that have one
        (tiles/crops zero-padded to a common shape, as the processors pad a batch)."""
        width = max(int(e["input_ids"].shape[0]) for e in examples)
        batch: dict[str, torch.Tensor] = {}
        fills = [("input_ids", pad_token_id), ("attention_mask", 0), ("labels", -100)]
        fills += [(key, 0) for key in self.extra_token_keys]
        for key, fill in fills:
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
                batch[key] = _zero_pad_cat(parts)
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


def _strip_duplicate_bos(tokenizer: Any, text: str) -> str:
    """Drop a chat template's leading BOS when the tokenizer adds one itself (Gemma-3, Llama-3 based
    templates): a doubled BOS shifts the model off its training distribution."""
    bos = tokenizer.bos_token
    if not bos or not text.startswith(bos):
        return text
    adds_bos = tokenizer("", add_special_tokens=True)["input_ids"][:1] == [tokenizer.bos_token_id]
    return text[len(bos):] if adds_bos else text


def _zero_pad_cat(parts: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate along dim 0 after zero-padding every other dim to the largest size. Identical to
    ``torch.cat`` for equal shapes; for tiled images (LLaVA-OneVision patches, Idefics3 crops and their
    pixel_attention_mask) it is the processors' own batch padding: all-zero tiles are dropped by the model
    (through ``image_sizes`` or the zero test) and zero mask entries mark padded pixels."""
    shape = [max(int(p.shape[d]) for p in parts) for d in range(1, parts[0].dim())]
    padded = []
    for p in parts:
        pad: list[int] = []
        for d in reversed(range(1, p.dim())):
            pad += [0, shape[d - 1] - int(p.shape[d])]
        padded.append(torch.nn.functional.pad(p, pad) if any(pad) else p)
    return torch.cat(padded, dim=0)


def _common_prefix_len(a: torch.Tensor, b: torch.Tensor) -> int:
    n = min(a.shape[0], b.shape[0])
    diff = (a[:n] != b[:n]).nonzero()
    return int(diff[0]) if diff.numel() else n


@register_family
class LlavaFamily(FamilyAdapter):
    """LLaVA-1.5 (``llava-hf/llava-1.5-*``) and the built-in tiny model."""

    name = "llava"
    model_types = ("llava",)


@register_family
class LlavaOnevisionFamily(FamilyAdapter):
    """LLaVA-OneVision (``llava-hf/llava-onevision-qwen2-*``): Qwen2 chat format, any-resolution tiles
    ([1, tiles, 3, H, W] per image, their count varying with the aspect ratio)."""

    name = "llava_onevision"
    model_types = ("llava_onevision",)
    answer_prefix = ""  # "<|im_start|>assistant\n" is followed directly by the answer
    end_token = "<|im_end|>"
    image_keys = ("pixel_values", "image_sizes", "batch_num_images")


@register_family
class Qwen2VLFamily(FamilyAdapter):
    """Qwen2-VL and Qwen2.5-VL: flattened patches (``pixel_values`` [patches, dim]) with ``image_grid_thw``;
    ``mm_token_type_ids`` mark image tokens for the multimodal rotary positions (M-RoPE)."""

    name = "qwen2_vl"
    model_types = ("qwen2_vl", "qwen2_5_vl")
    answer_prefix = ""
    end_token = "<|im_end|>"
    image_keys = ("pixel_values", "image_grid_thw")
    extra_token_keys = ("mm_token_type_ids",)
    vision_module_prefixes = ("model.visual",)
    projector_module_prefixes = ("model.visual.merger",)  # the patch merger is the projector


@register_family
class Idefics3Family(FamilyAdapter):
    """Idefics3 and SmolVLM: ``pixel_values`` [1, crops, 3, H, W] with ``pixel_attention_mask``; the
    language model is ``model.text_model`` and the projector ``model.connector``."""

    name = "idefics3"
    model_types = ("idefics3", "smolvlm")
    language_model_pattern = r"text_model"
    end_token = "<end_of_utterance>"  # "Assistant:" + " answer<end_of_utterance>"
    image_keys = ("pixel_values", "pixel_attention_mask")
    vision_module_prefixes = ("model.vision_model",)
    projector_module_prefixes = ("model.connector",)


@register_family
class Gemma3Family(FamilyAdapter):
    """Gemma-3 (``google/gemma-3-*-it``): ``token_type_ids`` mark image tokens, which attend to each other
    bidirectionally in training."""

    name = "gemma3"
    model_types = ("gemma3",)
    answer_prefix = ""  # "<start_of_turn>model\n" is followed directly by the answer
    end_token = "<end_of_turn>"
    image_keys = ("pixel_values",)
    extra_token_keys = ("token_type_ids",)
