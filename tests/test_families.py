"""Family adapters, table-driven over every supported family: each gets a tiny random model built offline
from a config, a tokenizer trained locally, a chat template like the real one, and the family's real
processor class. Checked per family: answer-only labels, image and text-only forward passes, mixed
batches equal to single examples, batched left-padded generation that stops on the end token, LoRA targets
confined to the language model, and the LoRA B matrices moving after one step with gradient checkpointing.

Offline limits of transformers 5.23 met here:
- without torchvision no video processor can be built, and ``ProcessorMixin`` rejects ``video_processor=None``;
  for the processors that declare a video slot (LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL) the tests use a
  subclass whose only change is that it has no video slot (images and text go through the real code);
- ``SmolVLMProcessor`` needs the ``num2words`` package (and a video processor), so the ``smolvlm`` model is
  paired with ``Idefics3Processor``, which expands a single image into the same token layout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from smfa.data import make_collator
from smfa.errors import ModelError
from smfa.eval.generate import generate_answers
from smfa.models.families import FamilyAdapter, family_for, family_for_model_type, supported_model_types
from smfa.models.loading import image_only_processor_class

IMAGE_PX = 32
QUESTIONS = ("What colour is the sky?", "Who is in the photo?", "Where does she live?")
ANSWERS = ("The sky is blue.", "A person with glasses.", "She lives in Lisbon.")
TEMPLATE_WORDS = "system user assistant model User Assistant You are a helpful assistant."
TINY_LAYERS = {"num_hidden_layers": 1, "num_attention_heads": 2}
TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_key_value_heads": 1, "max_position_embeddings": 512, **TINY_LAYERS}
SIGLIP = {
    "model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64, "image_size": IMAGE_PX, "patch_size": 8,
    **TINY_LAYERS,
}


# ---- tokenizers and processors ---------------------------------------------------------------------------
def bpe_tokenizer(special_tokens: list[str], bos_added: str | None = None, **kwargs: Any):
    """A byte-level BPE (the tokenizer type of Qwen2, SmolLM and Gemma) trained on the test sentences, so
    the answer boundary tokenises as in the real models; ``bos_added``: a BOS the tokenizer prepends."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=special_tokens, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator([*QUESTIONS, *ANSWERS, TEMPLATE_WORDS, "\n\n"], trainer)
    if bos_added:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos_added} $A", special_tokens=[(bos_added, tok.token_to_id(bos_added))]
        )
    return PreTrainedTokenizerFast(tokenizer_object=tok, padding_side="right", **kwargs)


def text_config(tok: Any, **extra: Any) -> dict[str, Any]:
    """A tiny language-model config over ``tok``'s vocabulary."""
    return {"vocab_size": len(tok), "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id, **TEXT, **extra}


def _finish(model: torch.nn.Module, tokenizer: Any) -> torch.nn.Module:
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model.eval()


# ---- one builder per family: (model, processor) ----------------------------------------------------------
def build_llava():
    from smfa.models.tiny import TinyModelConfig, build_processor, build_tiny_model

    cfg = TinyModelConfig(
        image_size=IMAGE_PX, patch_size=8, vision_hidden=32, vision_layers=1, vision_heads=2,
        text_hidden=32, text_layers=1, text_heads=2, text_intermediate=64,
    )
    processor = build_processor([*QUESTIONS, *ANSWERS], cfg)
    return build_tiny_model(processor, cfg), processor


CHATML_IMAGE_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}IMAGE{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_llava_onevision():
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessorPil,
        LlavaOnevisionProcessor,
    )

    tok = bpe_tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"],
        eos_token="<|im_end|>", pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<image>", "video_token": "<video>"},
    )
    pinpoints = [[IMAGE_PX, IMAGE_PX], [IMAGE_PX, 2 * IMAGE_PX], [2 * IMAGE_PX, IMAGE_PX], [2 * IMAGE_PX, 2 * IMAGE_PX]]
    image_processor = LlavaOnevisionImageProcessorPil(size={"height": IMAGE_PX, "width": IMAGE_PX}, image_grid_pinpoints=pinpoints)
    processor = image_only_processor_class(LlavaOnevisionProcessor)(
        image_processor=image_processor, tokenizer=tok, num_image_tokens=(IMAGE_PX // 8) ** 2,
        vision_feature_select_strategy="full", chat_template=CHATML_IMAGE_TEMPLATE.replace("IMAGE", "<image>\n"),
    )
    config = LlavaOnevisionConfig(
        text_config=text_config(tok, model_type="qwen2"),
        vision_config={**SIGLIP, "vision_use_head": False},
        image_token_id=tok.image_token_id, video_token_id=tok.video_token_id,
        image_grid_pinpoints=pinpoints, vision_feature_select_strategy="full",
    )
    torch.manual_seed(0)
    return _finish(LlavaOnevisionForConditionalGeneration(config), tok), processor


def _qwen_tokenizer_and_processor(processor_cls: type):
    from transformers import Qwen2VLImageProcessorPil

    tok = bpe_tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"],
        eos_token="<|im_end|>", pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
    )
    # 8 px patches merged 2×2: a 32×32 image is a 4×4 patch grid, 4 image tokens.
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": 16 * 16, "longest_edge": IMAGE_PX * IMAGE_PX}, patch_size=8, merge_size=2, temporal_patch_size=2
    )
    template = CHATML_IMAGE_TEMPLATE.replace("IMAGE", "<|vision_start|><|image_pad|><|vision_end|>")
    processor = image_only_processor_class(processor_cls)(image_processor=image_processor, tokenizer=tok, chat_template=template)
    return tok, processor


def _qwen_text_config(tok: Any) -> dict[str, Any]:
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}  # head_dim 16 → 8 pairs
    return text_config(tok, bos_token_id=None, rope_parameters=rope)


def _qwen_special_ids(tok: Any) -> dict[str, int]:
    return {
        "image_token_id": tok.image_token_id,
        "video_token_id": tok.video_token_id,
        "vision_start_token_id": tok.convert_tokens_to_ids("<|vision_start|>"),
    }


def build_qwen2_vl():
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    tok, processor = _qwen_tokenizer_and_processor(Qwen2VLProcessor)
    vision = {
        "depth": 1, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "patch_size": 8, "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    config = Qwen2VLConfig(text_config=_qwen_text_config(tok), vision_config=vision, **_qwen_special_ids(tok))
    torch.manual_seed(0)
    return _finish(Qwen2VLForConditionalGeneration(config), tok), processor


def build_qwen2_5_vl():
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    tok, processor = _qwen_tokenizer_and_processor(Qwen2_5_VLProcessor)
    vision = {
        "depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 32, "patch_size": 8,
        "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 32, "fullatt_block_indexes": [1],
    }
    config = Qwen2_5_VLConfig(text_config=_qwen_text_config(tok), vision_config=vision, **_qwen_special_ids(tok))
    torch.manual_seed(0)
    return _finish(Qwen2_5_VLForConditionalGeneration(config), tok), processor


# SmolVLM's template: "<|im_start|>User:<image>question<end_of_utterance>\nAssistant: answer<end_of_utterance>".
SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)


def _build_idefics3_like(model_cls: type, config_cls: type):
    from transformers import Idefics3ImageProcessorPil, Idefics3Processor

    grid = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    tok = bpe_tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>", "<global-img>", *grid],
        bos_token="<|im_start|>", eos_token="<end_of_utterance>", pad_token="<|endoftext|>",
    )
    # Images above 32 px are split into 32 px crops plus a global view: crops per image vary, so batches pad.
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": 2 * IMAGE_PX}, max_image_size={"longest_edge": IMAGE_PX}, do_image_splitting=True
    )
    scale = 2
    processor = Idefics3Processor(
        image_processor=image_processor, tokenizer=tok, image_seq_len=(IMAGE_PX // 8) ** 2 // scale**2, chat_template=SMOLVLM_TEMPLATE
    )
    config = config_cls(
        text_config=text_config(tok, model_type="llama"),
        vision_config={k: v for k, v in SIGLIP.items() if k != "model_type"},
        image_token_id=processor.image_token_id, scale_factor=scale,
    )
    torch.manual_seed(0)
    return _finish(model_cls(config), tok), processor


def build_idefics3():
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration

    return _build_idefics3_like(Idefics3ForConditionalGeneration, Idefics3Config)


def build_smolvlm():
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration

    return _build_idefics3_like(SmolVLMForConditionalGeneration, SmolVLMConfig)


GEMMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<start_of_image>{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def build_gemma3():
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessorPil, Gemma3Processor

    # Like Gemma's tokenizer, this one prepends <bos> itself while the template writes one too.
    tok = bpe_tokenizer(
        ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>"],
        bos_added="<bos>", bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
        extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"},
    )
    tokens_per_image = 4  # the 4×4 patch grid average-pooled to 2×2
    image_processor = Gemma3ImageProcessorPil(size={"height": IMAGE_PX, "width": IMAGE_PX})
    processor = Gemma3Processor(
        image_processor=image_processor, tokenizer=tok, image_seq_length=tokens_per_image, chat_template=GEMMA3_TEMPLATE
    )
    text = text_config(
        tok, num_hidden_layers=2, head_dim=16, query_pre_attn_scalar=16, sliding_window=16, bos_token_id=tok.bos_token_id
    )
    config = Gemma3Config(
        text_config=text, vision_config={**SIGLIP, "vision_use_head": False}, mm_tokens_per_image=tokens_per_image,
        boi_token_index=tok.boi_token_id, eoi_token_index=tok.eoi_token_id, image_token_index=tok.image_token_id,
    )
    torch.manual_seed(0)
    return _finish(Gemma3ForConditionalGeneration(config), tok), processor


@dataclass(frozen=True)
class Case:
    model_type: str
    family: str
    end: str  # the token that ends an assistant turn in the family's real chat format
    build: Callable[[], tuple[torch.nn.Module, Any]]


CASES = [
    Case("llava", "llava", "</s>", build_llava),
    Case("llava_onevision", "llava_onevision", "<|im_end|>", build_llava_onevision),
    Case("qwen2_vl", "qwen2_vl", "<|im_end|>", build_qwen2_vl),
    Case("qwen2_5_vl", "qwen2_vl", "<|im_end|>", build_qwen2_5_vl),
    Case("idefics3", "idefics3", "<end_of_utterance>", build_idefics3),
    Case("smolvlm", "idefics3", "<end_of_utterance>", build_smolvlm),
    Case("gemma3", "gemma3", "<end_of_turn>", build_gemma3),
]


@cache
def _built(model_type: str) -> tuple[torch.nn.Module, Any]:
    case = next(c for c in CASES if c.model_type == model_type)
    return case.build()


@pytest.fixture(params=CASES, ids=lambda c: c.model_type)
def case(request) -> tuple[Case, torch.nn.Module, Any, FamilyAdapter]:
    c = request.param
    model, processor = _built(c.model_type)
    model.eval()
    return c, model, processor, family_for(model)


WIDE = (64, 24)  # more tiles (LLaVA-OneVision), fewer crops (Idefics3) and patches (Qwen) than a square


def image(width: int = IMAGE_PX, height: int = IMAGE_PX, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def forward_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch).loss


# ---- tests -----------------------------------------------------------------------------------------------
def test_family_for_picks_the_adapter_by_model_type(case):
    c, model, _, family = case
    assert model.config.model_type == c.model_type
    assert family.name == c.family
    assert family_for(model.config).name == c.family
    assert c.model_type in supported_model_types()


def test_unknown_model_type_raises_model_error_listing_supported_types():
    with pytest.raises(ModelError) as err:
        family_for(SimpleNamespace(config=SimpleNamespace(model_type="blip_2")))
    message = str(err.value)
    assert "'blip_2'" in message
    for model_type in supported_model_types():
        assert model_type in message
    with pytest.raises(ModelError):
        family_for_model_type("")


@pytest.mark.parametrize("with_image", [True, False], ids=["image", "text_only"])
def test_labels_are_exactly_the_answer_and_end_token(case, with_image):
    c, _, processor, family = case
    tok = processor.tokenizer
    assert family.end_text(processor) == c.end
    for question, answer in zip(QUESTIONS, ANSWERS):
        enc = family.encode(processor, question, image() if with_image else None, answer)
        ids, labels = enc["input_ids"], enc["labels"]
        assert labels.shape == ids.shape
        learned = tok.decode(ids[labels != -100], skip_special_tokens=False)
        assert learned.lstrip() == answer + c.end
        assert labels[: int((labels == -100).sum())].eq(-100).all(), "the prompt must be one masked prefix"
        if tok.bos_token_id is not None:
            assert int((ids == tok.bos_token_id).sum()) <= 1, "BOS doubled by template + tokenizer"
        assert ("pixel_values" in enc) == with_image


@pytest.mark.parametrize("with_image", [True, False], ids=["image", "text_only"])
def test_forward_gives_a_finite_loss(case, with_image):
    _, model, processor, family = case
    enc = family.encode(processor, QUESTIONS[0], image() if with_image else None, ANSWERS[0])
    batch = make_collator(family, processor)([enc])
    with torch.no_grad():
        loss = forward_loss(model, batch)
    assert torch.isfinite(loss) and loss.item() > 0


def test_mixed_batch_equals_single_examples(case):
    """Right-padded training batch of a square image, a text-only and a wide image (more tiles/patches):
    every example's answer logits equal those of the same example run alone."""
    _, model, processor, family = case
    images = [image(), None, image(*WIDE, seed=1)]
    encs = [family.encode(processor, q, img, a) for q, img, a in zip(QUESTIONS, images, ANSWERS)]
    collate = make_collator(family, processor)
    batch = collate(encs)
    assert set(batch) == set().union(*encs), "every processor output reaches the model"
    with torch.no_grad():
        out = model(**batch)
        assert torch.isfinite(out.loss)
        for row, enc in enumerate(encs):
            single = model(**collate([enc])).logits[0]
            mask = enc["labels"] != -100
            n = int(enc["input_ids"].shape[0])
            torch.testing.assert_close(out.logits[row, :n][mask], single[mask], atol=1e-4, rtol=1e-4)


def test_answer_view_gives_the_models_own_loss(case):
    """``losses.answer_logits`` (the LM head on answer positions only, what every method trains with) gives
    each family's own causal-LM loss on a ragged batch of image and text-only examples."""
    from smfa.losses import answer_logits, answer_nll

    _, model, processor, family = case
    images = [image(), None, image(*WIDE, seed=1)]
    encs = [family.encode(processor, q, img, a) for q, img, a in zip(QUESTIONS, images, ANSWERS)]
    batch = make_collator(family, processor)(encs)
    with torch.no_grad():
        own = model(**batch).loss
        logits, labels = answer_logits(model, batch)
    assert logits.shape[1] < batch["labels"].shape[1], "the head must skip the prompt positions"
    torch.testing.assert_close(answer_nll(logits, labels), own, atol=1e-5, rtol=1e-5)


class _Bench:
    """What ``generate_answers`` needs of a bench: images by row."""

    def __init__(self, images: dict[str, Image.Image]):
        self.images = images

    def load_image(self, row: Any) -> Image.Image:
        return self.images[row.image]


def test_batched_generation_left_padded_mixed_image_and_text(case):
    _, model, processor, family = case
    bench = _Bench({"square.png": image(), "wide.png": image(*WIDE, seed=1)})
    rows = [
        SimpleNamespace(question=QUESTIONS[0], image="square.png"),
        SimpleNamespace(question=QUESTIONS[1], image=None),
        SimpleNamespace(question=QUESTIONS[2], image="wide.png"),
    ]
    loaded = SimpleNamespace(model=model, processor=processor, family=family)
    answers = generate_answers(loaded, rows, bench, batch_size=3, max_new_tokens=3, progress=False)
    assert len(answers) == len(rows) and all(isinstance(a, str) for a in answers)
    # Left padding must not change what a prompt generates.
    alone = [generate_answers(loaded, [row], bench, batch_size=1, max_new_tokens=3, progress=False)[0] for row in rows]
    assert answers == alone


def test_generation_stops_on_the_family_end_token(case):
    """With the end token forced to be the argmax, every prompt of a left-padded batch stops after it."""
    _, model, processor, family = case
    end_id = processor.tokenizer.convert_tokens_to_ids(family.end_text(processor))
    assert end_id in family.end_token_ids(processor)

    def force_end(_module, _inputs, logits):
        logits = logits.clone()
        logits[..., end_id] += 1e4
        return logits

    collate = make_collator(family, processor, padding_side="left")
    batch = collate([family.encode(processor, QUESTIONS[0], image()), family.encode(processor, QUESTIONS[1])])
    assert (batch["attention_mask"][:, -1] == 1).all(), "left padding keeps the prompt end aligned"
    hook = model.get_output_embeddings().register_forward_hook(force_end)
    try:
        with torch.no_grad():
            out = model.generate(
                **batch, max_new_tokens=5, do_sample=False, eos_token_id=family.end_token_ids(processor),
                pad_token_id=collate.pad_token_id,
            )
    finally:
        hook.remove()
    new = out[:, batch["input_ids"].shape[1]:]
    assert new.shape[1] == 1 and (new[:, 0] == end_id).all()


def test_lora_targets_are_language_model_linears_only(case):
    _, model, _, family = case
    targets = family.lora_targets(model)
    modules = dict(model.named_modules())
    assert targets
    assert all(isinstance(modules[name], torch.nn.Linear) for name in targets)
    # The excluded parts exist, so "none inside them" is not vacuous.
    assert family.vision_modules(model)
    assert any(name.startswith(family.projector_module_prefixes) for name in modules)
    outside = family.vision_module_prefixes + family.projector_module_prefixes
    assert not [t for t in targets if t.startswith(outside)]
    n_layers = model.config.get_text_config().num_hidden_layers
    assert len(targets) == len(family.lora_module_names) * n_layers


def test_lora_b_matrices_move_after_one_step_with_gradient_checkpointing(case):
    c, _, processor, family = case
    from smfa.training.engine import apply_lora

    model, _ = c.build()  # fresh: PEFT wraps the model in place
    model = apply_lora(model, family, r=4, alpha=8, dropout=0.0, gradient_checkpointing=True)
    model.train()
    assert model.base_model.model.is_activation_checkpointing
    lora_b = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert lora_b and all(p.requires_grad for p in lora_b.values())
    assert not [n for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n]
    before = {n: p.detach().clone() for n, p in lora_b.items()}
    encs = [family.encode(processor, QUESTIONS[0], image(), ANSWERS[0]), family.encode(processor, QUESTIONS[1], None, ANSWERS[1])]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss = forward_loss(model, make_collator(family, processor)(encs))
    loss.backward()
    optimizer.step()
    moved = [n for n, p in lora_b.items() if not torch.equal(p.detach(), before[n])]
    assert len(moved) == len(lora_b)


def test_a_saved_model_loads_back_with_its_processor(case, tmp_path):
    """Every family saved as a model directory loads through smfa's loader (image-and-video processors without
    their video part: no torchvision here) and encodes an image question exactly as the processor it was saved from."""
    from smfa.models.loading import load_model

    c, model, processor, family = case
    model.save_pretrained(tmp_path, safe_serialization=True)
    processor.save_pretrained(tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.family.name == family.name
    want = make_collator(family, processor)([family.encode(processor, QUESTIONS[0], image(), ANSWERS[0])])
    got = make_collator(loaded.family, loaded.processor)([loaded.family.encode(loaded.processor, QUESTIONS[0], image(), ANSWERS[0])])
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key
