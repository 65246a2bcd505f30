"""Random-weight checkpoints with a real model's shape, built offline: the widths of LLaVA-1.5-7B (hidden 4096,
MLP 11008, vocabulary 32,064, CLIP ViT-L/14 at 336 px → 576 image tokens per photo) or Qwen2-VL-7B (hidden
3584, MLP 18944, grouped-query attention with 4 KV heads, vocabulary 152,064, its 32-layer ViT with 14 px patches
merged 2×2 → 144 image tokens per 336 px photo) at a chosen depth, saved as a model directory every smfa
command loads. Nothing is downloaded: the tokenizer is a byte-level BPE trained on the bench's text (its ids
are a prefix of the real vocabulary's rows, which are all there), the processor is the family's own class
(Qwen2-VL's without its video part), the chat template the family's format.

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
    family: str  # "llava" | "qwen2_vl": which config, processor and chat format
    text: dict[str, Any]  # language-model config fields, depth excluded
    vision: dict[str, Any]  # vision-tower config fields, depth excluded
    layers: int  # the real language-model depth
    vision_layers: int  # the real vision-tower depth
    top: dict[str, Any] = field(default_factory=dict)  # the composite config's own fields (LlavaConfig, …)
    image_size: int = 336  # the photos' side in pixels

    @property
    def embedding_shape(self) -> tuple[int, int]:
        """[vocabulary, hidden]: the input embedding of every full-size copy (what the rehearsal counts)."""
        return self.text["vocab_size"], self.text["hidden_size"]


# llava-hf/llava-1.5-7b-hf's config.json: Llama-2-7B (vocabulary 32,064 with the image and pad tokens) and
# CLIP ViT-L/14 at 336 px; features from the second-to-last vision layer.
LLAVA_1_5_7B = ModelShape(
    name="llava-1.5-7b",
    family="llava",
    text=dict(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_attention_heads=32,
              num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False),
    vision=dict(image_size=336, patch_size=14, hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                projection_dim=768),
    layers=32,
    vision_layers=24,
    top=dict(vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu",
             image_seq_length=576),
)

# Qwen/Qwen2-VL-7B-Instruct's config.json: a Qwen2-7B language model (multimodal RoPE) and a 32-layer ViT
# (embed 1280, 14 px patches, 2×2 merge into the language model's width).
QWEN2_VL_7B = ModelShape(
    name="qwen2-vl-7b",
    family="qwen2_vl",
    text=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_attention_heads=28,
              num_key_value_heads=4, max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=False,
              rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}),
    vision=dict(embed_dim=1280, hidden_size=3584, mlp_ratio=4, num_heads=16, patch_size=14, spatial_merge_size=2,
                temporal_patch_size=2, in_channels=3),
    layers=28,
    vision_layers=32,
    top=dict(tie_word_embeddings=False),
)

SHAPES = {shape.name: shape for shape in (LLAVA_1_5_7B, QWEN2_VL_7B)}


def shrunk(shape: ModelShape, **sizes: int) -> ModelShape:
    """The same family with smaller widths (tests and ``--dry-run``s): keys of ``text``/``vision`` prefixed
    ``text_``/``vision_`` (e.g. ``text_hidden_size=64``)."""
    text = {**shape.text, **{k[5:]: v for k, v in sizes.items() if k.startswith("text_")}}
    vision = {**shape.vision, **{k[7:]: v for k, v in sizes.items() if k.startswith("vision_")}}
    top = dict(shape.top)
    image_size = shape.image_size
    if shape.family == "llava":
        image_size = vision["image_size"]
        top["image_seq_length"] = (vision["image_size"] // vision["patch_size"]) ** 2
    else:
        vision["hidden_size"] = text["hidden_size"]  # the merger projects into the language model's width
    return replace(shape, text=text, vision=vision, top=top, image_size=image_size)


# The ChatML format of Qwen2-VL's chat template (system prompt, image slot between vision markers).
QWEN_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]


def _qwen_processor(corpus: list[str], shape: ModelShape):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2VLImageProcessorPil, Qwen2VLProcessor

    from smfa.models.loading import image_only_processor_class

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=4096, min_frequency=2, special_tokens=_QWEN_SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(sorted(set(corpus)), trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
                                  padding_side="right", model_max_length=shape.text["max_position_embeddings"])
    side, patch = shape.image_size, shape.vision["patch_size"]
    # A photo of side ``side`` is one grid of (side / patch)² patches, never resized further.
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": patch * patch * 4, "longest_edge": side * side}, patch_size=patch,
        merge_size=shape.vision["spatial_merge_size"], temporal_patch_size=shape.vision["temporal_patch_size"])
    processor_cls = image_only_processor_class(Qwen2VLProcessor)
    return processor_cls(image_processor=image_processor, tokenizer=tok, chat_template=QWEN_CHAT_TEMPLATE)


def _processor(corpus: list[str], shape: ModelShape):
    if shape.family == "qwen2_vl":
        return _qwen_processor(corpus, shape)
    from smfa.models.tiny import TinyModelConfig, build_processor

    processor = build_processor(corpus, TinyModelConfig(image_size=shape.vision["image_size"], patch_size=shape.vision["patch_size"]))
    processor.tokenizer.model_max_length = shape.text["max_position_embeddings"]
    return processor


def model_config(shape: ModelShape, layers: int, vision_layers: int, tok: Any = None):
    """The transformers config of ``shape`` at the given depths; ``tok`` gives the special token ids (None:
    placeholders, enough to count parameters)."""
    def tid(token: str, fallback: int) -> int:
        return tok.convert_tokens_to_ids(token) if tok is not None else fallback

    if shape.family == "qwen2_vl":
        from transformers import Qwen2VLConfig

        ids = {"pad_token_id": tid("<|endoftext|>", 0), "eos_token_id": tid("<|im_end|>", 1)}
        return Qwen2VLConfig(text_config={**shape.text, "num_hidden_layers": layers, "bos_token_id": None, **ids},
                             vision_config={**shape.vision, "depth": vision_layers},
                             image_token_id=tid("<|image_pad|>", 2), video_token_id=tid("<|video_pad|>", 3),
                             vision_start_token_id=tid("<|vision_start|>", 4), **shape.top)
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    from smfa.models.tiny import IMAGE

    ids = {"pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id} if tok else {}
    text = LlamaConfig(**shape.text, num_hidden_layers=layers, **ids)
    vision = CLIPVisionConfig(**shape.vision, num_hidden_layers=vision_layers)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_id=tid(IMAGE, 0), tie_word_embeddings=False,
                       **shape.top)


def _model_class(shape: ModelShape):
    from transformers import LlavaForConditionalGeneration, Qwen2VLForConditionalGeneration

    return Qwen2VLForConditionalGeneration if shape.family == "qwen2_vl" else LlavaForConditionalGeneration


def build_checkpoint(out: str | Path, corpus: Iterable[str], *, shape: ModelShape = LLAVA_1_5_7B, layers: int,
                     vision_layers: int | None = None, dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> Path:
    """Write a model directory of ``shape`` at ``layers`` language-model layers (``vision_layers``: the vision
    tower's depth, default the real one) with random weights in ``dtype``; returns ``out``. The weights are
    created directly in ``dtype`` (a 7B-wide layer is ~0.8 GB in fp32)."""
    processor = _processor(list(corpus), shape)
    tok = processor.tokenizer
    if len(tok) > shape.text["vocab_size"]:
        raise ValueError(f"the corpus tokenizer has {len(tok)} tokens, more than {shape.name}'s vocabulary")
    config = model_config(shape, layers, vision_layers or shape.vision_layers, tok)
    torch.manual_seed(seed)
    model = _model_class(shape)._from_config(config, dtype=dtype)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    out = Path(out)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return out


def full_size_params(shape: ModelShape, layers: int | None = None, vision_layers: int | None = None) -> int:
    """Parameters of the whole model of ``shape`` (default: at its real depths), for projections: counted on
    the model built on the meta device (no memory)."""
    config = model_config(shape, shape.layers if layers is None else layers,
                          shape.vision_layers if vision_layers is None else vision_layers)
    with torch.device("meta"):
        model = _model_class(shape)._from_config(config)
    return sum(p.numel() for p in model.parameters())
