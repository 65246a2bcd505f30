"""Random-weight checkpoints with a real family's structure (smfa.models.synthetic), at small widths: what the
scale rehearsal and gpu_check build at 7B widths, saved, loaded by smfa's loader and trained one step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from smfa.data import encode_items, make_collator, reference_items
from smfa.losses import answer_logits, answer_nll
from smfa.models.loading import load_model
from smfa.models.synthetic import LLAVA_1_5_7B, QWEN2_VL_7B, build_checkpoint, full_size_params, shrunk
from smfa.models.tiny import tiny_corpus

SMALL = {
    "llava-1.5-7b": shrunk(LLAVA_1_5_7B, text_hidden_size=64, text_intermediate_size=128, text_num_attention_heads=4,
                           text_num_key_value_heads=4, vision_image_size=32, vision_patch_size=8, vision_hidden_size=32,
                           vision_intermediate_size=64, vision_num_attention_heads=2, vision_projection_dim=32),
    "qwen2-vl-7b": shrunk(QWEN2_VL_7B, text_hidden_size=64, text_intermediate_size=128, text_num_attention_heads=4,
                          text_num_key_value_heads=2, vision_embed_dim=32, vision_num_heads=2, vision_patch_size=8,
                          text_rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]}),
}


def test_the_7b_shapes_count_their_published_parameters() -> None:
    """LLaVA-1.5-7B has 7.06 B parameters and Qwen2-VL-7B 8.29 B (their model cards); counted without memory."""
    assert round(full_size_params(LLAVA_1_5_7B) / 1e9, 2) == 7.06
    assert round(full_size_params(QWEN2_VL_7B) / 1e9, 2) == 8.29
    # depth enters linearly: one more language layer adds one layer's parameters
    one, two = (full_size_params(QWEN2_VL_7B, n, 2) for n in (1, 2))
    assert two - one == (full_size_params(QWEN2_VL_7B, 3, 2) - two) > 0


@pytest.mark.parametrize("name", sorted(SMALL))
def test_a_synthetic_checkpoint_loads_and_trains(name: str, tiny_bench_dir: Path, tmp_path: Path) -> None:
    from smfa.bench import Bench

    shape = SMALL[name]
    bench = Bench.load(tiny_bench_dir)
    out = build_checkpoint(tmp_path / name, tiny_corpus(bench), shape=shape, layers=2, vision_layers=1,
                           dtype=torch.float32)
    loaded = load_model(out)
    assert loaded.family.name == shape.family
    assert sum(p.numel() for p in loaded.model.parameters()) == full_size_params(shape, 2, 1)
    assert loaded.model.get_input_embeddings().weight.shape == shape.embedding_shape
    rows = [q for q in bench.training_rows() if q.image][:2]
    data = encode_items(reference_items(rows), bench=bench, family=loaded.family, processor=loaded.processor,
                        progress=False)
    batch = make_collator(loaded.family, loaded.processor)([data[i] for i in range(len(data))])
    loss = answer_nll(*answer_logits(loaded.model, batch))
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in loaded.model.get_input_embeddings().parameters()]
    assert all(g is not None and bool(g.abs().sum() > 0) for g in grads)
