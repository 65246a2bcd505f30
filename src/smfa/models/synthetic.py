"""Random-weight checkpoints with a real model's shape, built offline: the widths of LLaVA-1.5-7B (hidden,
MLP, heads, vocabulary, CLIP ViT-L/14 at 336 px, so 576 image tokens per photo) at a chosen depth, saved
as a model directory every smfa command loads. Nothing is downloaded: the tokenizer is a byte-level BPE
trained on the bench's text (its ids are a prefix of the real vocabulary's 32,064 rows, which are all
there), the processor is the family's own class, the chat template LLaVA-1.5's.

``benchmarks/scale_rehearsal.py`` runs smfa's stages on these at 1, 2 and 4 layers and projects each
stage's memory to the full depth; ``benchmarks/gpu_check.py`` runs the full-depth shape on a GPU.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class ModelShape:
    """A family's real shapes (from its published ``config.json``) and how deep it really is."""

    name: str
    text: dict[str, Any]  # language-model config fields (LlamaConfig), depth excluded
    vision: dict[str, Any]  # vision-tower config fields (CLIPVisionConfig), depth excluded
    layers: int  # the real language-model depth
    vision_layers: int  # the real vision-tower depth
    llava: dict[str, Any] = field(default_factory=dict)  # LlavaConfig fields

    def language_layer_params(self) -> int:
        """Parameters of one language-model decoder layer (attention, MLP, two norms)."""
        h, m = self.text["hidden_size"], self.text["intermediate_size"]
        kv = h * self.text["num_key_value_heads"] // self.text["num_attention_heads"]
        return 2 * h * h + 2 * h * kv + 3 * h * m + 2 * h

    def vision_layer_params(self) -> int:
        """Parameters of one vision-tower encoder layer (attention with biases, MLP with biases, two norms)."""
        h, m = self.vision["hidden_size"], self.vision["intermediate_size"]
        return 4 * (h * h + h) + (h * m + m) + (m * h + h) + 4 * h


# llava-hf/llava-1.5-7b-hf's config.json: Llama-2-7B (vocabulary 32,064 with the image and pad tokens) and
# CLIP ViT-L/14 at 336 px; features from the second-to-last vision layer.
LLAVA_1_5_7B = ModelShape(
    name="llava-1.5-7b",
    text=dict(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_attention_heads=32,
              num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False),
    vision=dict(image_size=336, patch_size=14, hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                projection_dim=768),
    layers=32,
    vision_layers=24,
    llava=dict(vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu",
               image_seq_length=576),
)


def shrunk(shape: ModelShape, **sizes: int) -> ModelShape:
    """The same family with smaller widths (tests and ``--dry-run``s): keys of ``text``/``vision`` prefixed
    ``text_``/``vision_`` (e.g. ``text_hidden_size=64``)."""
    text = {**shape.text, **{k[5:]: v for k, v in sizes.items() if k.startswith("text_")}}
    vision = {**shape.vision, **{k[7:]: v for k, v in sizes.items() if k.startswith("vision_")}}
    image_tokens = (vision["image_size"] // vision["patch_size"]) ** 2
    return replace(shape, text=text, vision=vision, llava={**shape.llava, "image_seq_length": image_tokens})


def build_llava_checkpoint(out: str | Path, corpus: Iterable[str], *, shape: ModelShape = LLAVA_1_5_7B, layers: int,
                           vision_layers: int | None = None, dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> Path:
    """Write a LLaVA model directory of ``shape`` at ``layers`` language-model layers (``vision_layers``:
    the vision tower's depth, default the real one) with random weights in ``dtype``; returns ``out``.
    The weights are created directly in ``dtype`` (a 7B-wide layer is ~0.8 GB in fp32)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from smfa.models.tiny import IMAGE, TinyModelConfig, build_processor

    vision_px, patch = shape.vision["image_size"], shape.vision["patch_size"]
    processor = build_processor(list(corpus), TinyModelConfig(image_size=vision_px, patch_size=patch))
    tok = processor.tokenizer
    tok.model_max_length = shape.text["max_position_embeddings"]
    if len(tok) > shape.text["vocab_size"]:
        raise ValueError(f"the corpus tokenizer has {len(tok)} tokens, more than {shape.name}'s vocabulary")
    text = LlamaConfig(**shape.text, num_hidden_layers=layers, pad_token_id=tok.pad_token_id,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    vision = CLIPVisionConfig(**shape.vision, num_hidden_layers=vision_layers or shape.vision_layers)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids(IMAGE),
                         tie_word_embeddings=False, **shape.llava)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration._from_config(config, dtype=dtype)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    out = Path(out)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return out


def full_size_params(shape: ModelShape, layers: int | None = None, vision_layers: int | None = None) -> int:
    """Parameters of the whole model of ``shape`` (default: at its real depths), for projections."""
    h, v = shape.text["hidden_size"], shape.text["vocab_size"]
    vh = shape.vision["hidden_size"]
    patches = (shape.vision["image_size"] // shape.vision["patch_size"]) ** 2
    embeddings = 2 * v * h + h  # input embeddings, LM head, final norm
    # patch embedding, class token, position embeddings, pre/post norms
    vision_fixed = 3 * vh * shape.vision["patch_size"] ** 2 + vh + (patches + 1) * vh + 4 * vh
    projector = vh * h + h + h * h + h
    n_layers = shape.layers if layers is None else layers
    n_vision = shape.vision_layers if vision_layers is None else vision_layers
    return (embeddings + n_layers * shape.language_layer_params() + vision_fixed
            + n_vision * shape.vision_layer_params() + projector)
