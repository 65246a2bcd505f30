"""SMFA sculpting: the mask math on hand-made tensors, and the streaming / out-of-core merges checked
against PEFT itself on a tiny Llama with two real PEFT adapters."""

from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

import smfa.sculpt.merge as sculpt_merge
from smfa.errors import ModelError, OutputError, SculptError
from smfa.sculpt import (
    REPORT_JSON,
    REPORT_MD,
    LoraAdapter,
    LowRankDelta,
    aggregate_stats,
    dense_deltas,
    mask_stats,
    merge_sculpted_into,
    paired_dense_deltas,
    resolve_targets,
    sculpt_checkpoint,
    sculpt_delta,
    sculpt_dual,
    sculpt_mask,
    write_sculpt_report,
)
from smfa.sculpt.mask import row_parallel
from smfa.sculpt.shards import ShardRewrite, read_header, rewrite_shards

# ---- hand-made 2×3 case ------------------------------------------------------------------------------
# ‖ΔW_f‖² = ‖ΔW_a‖² = 41, so ρ = 1 (up to ε). Per entry (ΔW_f, ΔW_a):
#   (0,0) ( 2, -4) conflict, R ⇔ 4k < 2      (0,1) (-1, -2) same sign, R ⇔ 2k < 1
#   (0,2) ( 2,  0) zero anchor: never C, R always     (1,0) ( 0, 1) zero forget: never C, never R
#   (1,1) ( 4, -4) conflict, R ⇔ 4k < 4      (1,2) (-4,  2) conflict, R ⇔ 2k < 4
DF = torch.tensor([[2.0, -1.0, 2.0], [0.0, 4.0, -4.0]])
DA = torch.tensor([[-4.0, -2.0, 0.0], [1.0, -4.0, 2.0]])
TINY_EPS = 1e-30  # absorbed by ‖ΔW_a‖ = √41 in float64, so ρ is exactly 1 for the tie cases

HAND_CASES = [  # mode, k, expected ΔW'_f
    ("both", 0.0, [[0, -1, 2], [0, 0, 0]]),  # k = 0: every conflicting entry masked
    ("both", 0.25, [[0, -1, 2], [0, 0, 0]]),
    ("both", 0.75, [[2, -1, 2], [0, 0, 0]]),
    ("both", 1.5, [[2, -1, 2], [0, 4, 0]]),
    ("both", 3.0, [[2, -1, 2], [0, 4, -4]]),  # larger k ⇒ fewer masked
    ("both", 1e30, [[2, -1, 2], [0, 4, -4]]),  # huge k ⇒ nothing masked
    ("conflict", 0.75, [[0, -1, 2], [0, 0, 0]]),
    ("conflict", 1e30, [[0, -1, 2], [0, 0, 0]]),  # k plays no part
    ("magnitude", 0.25, [[0, 0, 0], [0, 0, 0]]),
    ("magnitude", 0.75, [[2, -1, 0], [0, 0, 0]]),
    ("magnitude", 3.0, [[2, -1, 0], [0, 4, -4]]),  # the zero-anchor entry stays in R for every k
    ("none", 0.0, [[2, -1, 2], [0, 4, -4]]),
    ("none", 0.75, [[2, -1, 2], [0, 4, -4]]),
]


@pytest.mark.parametrize("mode,k,expected", HAND_CASES)
def test_sculpt_delta_hand_made(mode: str, k: float, expected: list) -> None:
    out = sculpt_delta(DF, DA, k, mode)
    assert torch.equal(out, torch.tensor(expected, dtype=torch.float32))
    assert torch.equal(sculpt_mask(DF, DA, k, mode), (out == 0) & (DF != 0))


@pytest.mark.parametrize("mode,k,expected", [
    ("both", 0.5, [[2, -1, 2], [0, 0, 0]]),  # (0,0): |ΔW_f| = 2 = k·ρ·|ΔW_a| — a tie, not masked
    ("both", 1.0, [[2, -1, 2], [0, 4, 0]]),  # (1,1): 4 = 1·1·4 — a tie, not masked
    ("magnitude", 0.5, [[2, -1, 0], [0, 0, 0]]),  # (0,0) and (0,1) are ties, not in R
])
def test_ties_are_not_masked(mode: str, k: float, expected: list) -> None:
    assert mask_stats(DF, DA, k, mode, eps=TINY_EPS).rho == 1.0
    assert torch.equal(sculpt_delta(DF, DA, k, mode, eps=TINY_EPS), torch.tensor(expected, dtype=torch.float32))


def test_mask_stats_hand_made() -> None:
    s = mask_stats(DF, DA, 0.75, "both")
    assert s.numel == 6
    assert s.share_masked == pytest.approx(2 / 6)
    assert s.share_conflict == pytest.approx(3 / 6)
    assert s.share_magnitude == pytest.approx(3 / 6)  # (0,2), (1,1), (1,2)
    assert s.rho == pytest.approx(1.0, abs=1e-12)
    assert s.norm_forget == pytest.approx(math.sqrt(41))
    assert s.norm_anchor == pytest.approx(math.sqrt(41))
    assert s.norm_sculpted == pytest.approx(3.0)  # ‖[2, -1, 2]‖
    assert s.cosine == pytest.approx(-30 / 41)
    # C and R are reported whatever the mode; only the masked share follows it
    none = mask_stats(DF, DA, 0.75, "none")
    assert (none.share_masked, none.share_conflict, none.share_magnitude) == (0.0, 0.5, 0.5)
    assert none.norm_sculpted == pytest.approx(math.sqrt(41))


def test_huge_k_leaves_magnitude_only_where_the_anchor_is_zero() -> None:
    dense_anchor = DA.clone()
    dense_anchor[0, 2] = 0.5
    assert not sculpt_mask(DF, dense_anchor, 1e30, "magnitude").any()
    assert torch.equal(sculpt_mask(DF, DA, 1e30, "magnitude"), torch.tensor([[False, False, True], [False] * 3]))


def _reference(df: torch.Tensor, da: torch.Tensor, k: float, mode: str, eps: float = 1e-12) -> torch.Tensor:
    """The formula as the spec writes it, in float32."""
    df, da = df.float(), da.float()
    rho = float(torch.linalg.vector_norm(df, dtype=torch.float64)) / (
        float(torch.linalg.vector_norm(da, dtype=torch.float64)) + eps)
    c = da * df < 0
    r = (k * rho) * da.abs() < df.abs()
    m = {"both": c & r, "conflict": c, "magnitude": r, "none": torch.zeros_like(c)}[mode]
    return torch.where(m, torch.zeros_like(df), df)


@pytest.mark.parametrize("mode", ["both", "conflict", "magnitude", "none"])
@pytest.mark.parametrize("k", [0.0, 0.5, 1.0, 5.0])
def test_random_tensors_match_the_formula(mode: str, k: float) -> None:
    gen = torch.Generator().manual_seed(0)
    df, da = torch.randn(37, 53, generator=gen), torch.randn(37, 53, generator=gen) * 0.3
    df[0, :5] = 0.0
    da[1, :5] = 0.0
    assert torch.equal(sculpt_delta(df, da, k, mode), _reference(df, da, k, mode))


def test_bf16_in_bf16_out_computed_in_float32() -> None:
    gen = torch.Generator().manual_seed(1)
    df = torch.randn(16, 24, generator=gen).to(torch.bfloat16)
    da = torch.randn(16, 24, generator=gen).to(torch.bfloat16)
    out = sculpt_delta(df, da, 1.0)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, _reference(df, da, 1.0, "both").to(torch.bfloat16))
    assert 0 < int((out == 0).sum()) < out.numel()


def test_inputs_are_not_modified() -> None:
    for dtype in (torch.float32, torch.bfloat16):
        df, da = DF.to(dtype), DA.to(dtype)
        before = (df.clone(), da.clone())
        sculpt_delta(df, da, 0.0)
        sculpt_mask(df, da, 0.0)
        mask_stats(df, da, 0.0)
        sculpt_dual(df, df, da, 0.0, 0.0)
        assert torch.equal(df, before[0]) and torch.equal(da, before[1])


def test_sculpt_dual_is_the_mean_of_two_sculpts() -> None:
    gen = torch.Generator().manual_seed(2)
    df1, df2, da = (torch.randn(8, 12, generator=gen) for _ in range(3))
    expected = 0.5 * (_reference(df1, da, 0.5, "both") + _reference(df2, da, 3.0, "both"))
    assert torch.allclose(sculpt_dual(df1, df2, da, 0.5, 3.0), expected, atol=0, rtol=1e-7)


@pytest.mark.parametrize("kwargs,message", [
    ({"delta_anchor": torch.zeros(3, 2)}, "shape"),
    ({"delta_forget": torch.tensor([[1.0, float("nan"), 0.0], [0.0, 0.0, 0.0]])}, "NaN"),
    ({"delta_anchor": torch.tensor([[1.0, float("inf"), 0.0], [0.0, 0.0, 0.0]])}, "infinite"),
    ({"delta_forget": torch.ones(2, 3, dtype=torch.int64)}, "floating-point"),
    ({"k": -0.1}, "k must be"),
    ({"k": float("nan")}, "k must be"),
    ({"k": float("inf")}, "k must be"),
    ({"mode": "soft"}, "unknown sculpt mode"),
    ({"eps": 0.0}, "eps"),
])
def test_bad_inputs_raise_sculpt_error(kwargs: dict, message: str) -> None:
    args = {"delta_forget": DF, "delta_anchor": DA, "k": 1.0, "mode": "both", **kwargs}
    with pytest.raises(SculptError, match=message):
        sculpt_delta(**args)


def test_aggregate_stats_weights_by_size() -> None:
    a, b = mask_stats(DF, DA, 0.75), mask_stats(DF[:1], DA[:1], 0.75)
    total = aggregate_stats([a, b])
    assert total.numel == 9
    assert total.share_masked == pytest.approx((2 + 0) / 9)
    assert total.norm_forget == pytest.approx(math.sqrt(41 + 9))
    assert total.cosine == pytest.approx((-30 - 6) / (math.sqrt(50) * math.sqrt(41 + 20)))


# ---- adapter modules → weights -----------------------------------------------------------------------
Q0 = "layers.0.self_attn.q_proj"
VISION_Q0 = f"vision_tower.vision_model.encoder.{Q0}.weight"
LLAVA_NEW = [f"model.language_model.{Q0}.weight", f"model.{VISION_Q0}", "lm_head.weight"]  # transformers layout
LLAVA_LEGACY = [f"language_model.model.{Q0}.weight", VISION_Q0, "language_model.lm_head.weight"]  # legacy layout


@pytest.mark.parametrize("modules,names,expected", [
    ([f"model.{Q0}"], [f"model.{Q0}.weight"], [f"model.{Q0}.weight"]),
    ([f"model.{Q0}"], [f"language_model.model.{Q0}.weight"], [f"language_model.model.{Q0}.weight"]),
    ([f"model.language_model.{Q0}", "lm_head"], LLAVA_LEGACY, [LLAVA_LEGACY[0], LLAVA_LEGACY[2]]),
    ([f"language_model.model.{Q0}", "language_model.lm_head"], LLAVA_NEW, [LLAVA_NEW[0], LLAVA_NEW[2]]),
])
def test_resolve_targets(modules: list, names: list, expected: list) -> None:
    assert resolve_targets(modules, names) == dict(zip(modules, expected))


@pytest.mark.parametrize("modules,names,message", [
    (["model.layers.0.self_attn.k_proj"], LLAVA_NEW, "matches no weight"),
    ([Q0], LLAVA_NEW, "matches several weights"),
    ([f"model.{Q0}"], LLAVA_NEW, "matches several weights"),  # the language model's or the vision tower's?
    (["a.q_proj", "b.a.q_proj"], ["b.a.q_proj.weight"], "all map to the weight"),
])
def test_resolve_targets_errors(modules: list, names: list, message: str) -> None:
    with pytest.raises(SculptError, match=message):
        resolve_targets(modules, names)


# ---- tiny models with real PEFT adapters --------------------------------------------------------------
def tiny_llama(hidden: int = 32, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=64)
    return LlamaForCausalLM(cfg).eval()


def tiny_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=64, n_positions=32)).eval()


def save_adapter(base: torch.nn.Module, path: Path, seed: int, scale: float = 0.05, save_embedding_layers: bool = False,
                 **lora: object) -> Path:
    """A PEFT adapter with random non-zero A and B (nothing trained)."""
    lora = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], **lora}
    model = get_peft_model(copy.deepcopy(base), LoraConfig(**lora))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
    model.save_pretrained(path, save_embedding_layers=save_embedding_layers)
    return path


def peft_deltas(base: torch.nn.Module, adapter: Path) -> dict[str, torch.Tensor]:
    """ΔW per base weight name, from PEFT's own get_delta_weight."""
    model = PeftModel.from_pretrained(copy.deepcopy(base), adapter)
    out = {}
    for name, module in model.base_model.model.named_modules():
        if hasattr(module, "get_delta_weight") and hasattr(module, "lora_A"):
            out[f"{name}.weight"] = module.get_delta_weight("default").detach().float()
    assert out
    return out


@pytest.fixture(scope="module")
def llama_setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[LlamaForCausalLM, Path, Path, Path]:
    root = tmp_path_factory.mktemp("adapters")
    base = tiny_llama()
    forget = save_adapter(base, root / "forget", seed=1)
    anchor = save_adapter(base, root / "anchor", seed=2, r=8, lora_alpha=16)  # another rank is fine
    forget2 = save_adapter(base, root / "forget2", seed=3)
    return base, forget, anchor, forget2


def test_adapter_reads_peft_files(llama_setup) -> None:
    base, forget, _, _ = llama_setup
    adapter = LoraAdapter(forget)
    expected_modules = sorted(f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj"))
    assert adapter.modules == tuple(expected_modules)
    expected = peft_deltas(base, forget)
    got = dict(dense_deltas(forget))
    assert got.keys() == expected.keys()
    for name in expected:
        assert torch.allclose(got[name], expected[name], atol=1e-7)


def test_merge_mode_none_equals_peft_merge_and_unload(llama_setup) -> None:
    base, forget, anchor, _ = llama_setup
    model = copy.deepcopy(base)
    report = merge_sculpted_into(model, forget, anchor, k=1.0, mode="none", progress=False)
    expected = PeftModel.from_pretrained(copy.deepcopy(base), forget).merge_and_unload().state_dict()
    for name, w in model.state_dict().items():
        assert torch.allclose(w, expected[name], atol=1e-6), name
    assert all(s.share_masked == 0 for s in report.views[0].modules.values())


@pytest.mark.parametrize("k", [0.0, 1.0, 5.0])
def test_merge_mode_both_equals_manual_reference(llama_setup, k: float) -> None:
    base, forget, anchor, _ = llama_setup
    d_f, d_a = peft_deltas(base, forget), peft_deltas(base, anchor)
    model = copy.deepcopy(base)
    report = merge_sculpted_into(model, forget, anchor, k=k, mode="both", progress=False)
    state, base_state = model.state_dict(), base.state_dict()
    for name, w in state.items():
        expected = base_state[name] + sculpt_delta(d_f[name], d_a[name], k) if name in d_f else base_state[name]
        assert torch.allclose(w, expected, atol=1e-6), name
    total = report.views[0].totals()
    if k == 0:  # every conflicting entry is masked
        assert total.share_masked == total.share_conflict > 0
    else:  # only some conflicting entries
        assert total.share_masked < total.share_conflict
    assert report.targets == {m: f"{m}.weight" for m in LoraAdapter(forget).modules}
    stats = report.views[0].modules[f"model.{Q0}"]
    ref = mask_stats(d_f[f"model.{Q0}.weight"], d_a[f"model.{Q0}.weight"], k)
    for name in ("share_masked", "share_conflict", "share_magnitude", "rho", "norm_forget", "norm_anchor",
                 "norm_sculpted", "cosine"):
        assert getattr(stats, name) == pytest.approx(getattr(ref, name), rel=1e-5, abs=1e-9), name


def test_merge_dual_equals_sculpt_dual(llama_setup) -> None:
    base, forget, anchor, forget2 = llama_setup
    d_f, d_f2, d_a = peft_deltas(base, forget), peft_deltas(base, forget2), peft_deltas(base, anchor)
    model = copy.deepcopy(base)
    report = merge_sculpted_into(model, forget, anchor, 0.5, "both", forget_adapter_dir2=forget2, k2=2.0, progress=False)
    base_state = base.state_dict()
    for name, w in model.state_dict().items():
        if name in d_f:
            expected = base_state[name] + sculpt_dual(d_f[name], d_f2[name], d_a[name], 0.5, 2.0)
            assert torch.allclose(w, expected, atol=1e-6), name
    assert [v.k for v in report.views] == [0.5, 2.0]
    assert len(report.views[1].modules) == 4


@pytest.mark.parametrize("build,lora", [
    (tiny_llama, {"use_rslora": True, "target_modules": ["q_proj", "down_proj"]}),
    (tiny_llama, {"alpha_pattern": {"v_proj": 32}, "rank_pattern": {"v_proj": 2}}),
    (tiny_llama, {"target_modules": ["embed_tokens", "q_proj"]}),  # Embedding LoRA: ΔW = (B @ A)ᵀ
    (tiny_gpt2, {"target_modules": ["c_attn"], "fan_in_fan_out": True}),  # GPT-2 Conv1D
])
def test_lora_variants_merge_like_peft(tmp_path: Path, build, lora: dict) -> None:
    base = build()
    forget = save_adapter(base, tmp_path / "f", seed=4, **lora)
    anchor = save_adapter(base, tmp_path / "a", seed=5, **lora)
    model = copy.deepcopy(base)
    merge_sculpted_into(model, forget, anchor, k=1.0, mode="none", progress=False)
    expected = PeftModel.from_pretrained(copy.deepcopy(base), forget).merge_and_unload().state_dict()
    changed = 0
    for name, w in model.state_dict().items():
        assert torch.allclose(w, expected[name], atol=1e-6), name
        changed += not torch.equal(w, base.state_dict()[name])
    assert changed > 0


def test_mismatched_adapters_raise(tmp_path: Path, llama_setup) -> None:
    base, forget, anchor, _ = llama_setup
    other_targets = save_adapter(base, tmp_path / "qk", seed=6, target_modules=["q_proj", "k_proj"])
    with pytest.raises(SculptError, match=r"k_proj.*anchor adapter.*not by the forget adapter"):
        merge_sculpted_into(copy.deepcopy(base), forget, other_targets, 1.0, progress=False)
    with pytest.raises(SculptError, match=r"k_proj.*forget adapter.*not by the anchor adapter"):
        list(paired_dense_deltas(other_targets, anchor))
    wider = save_adapter(tiny_llama(hidden=48), tmp_path / "wide", seed=7)
    with pytest.raises(SculptError, match="shape"):
        merge_sculpted_into(copy.deepcopy(base), forget, wider, 1.0, progress=False)
    with pytest.raises(SculptError, match="different model"):  # both adapters fit each other, not this model
        merge_sculpted_into(tiny_llama(hidden=48), forget, anchor, 1.0, progress=False)
    with pytest.raises(SculptError, match="k2"):
        merge_sculpted_into(copy.deepcopy(base), forget, anchor, 1.0, k2=2.0, progress=False)
    with pytest.raises(SculptError, match="not a PEFT adapter directory"):
        merge_sculpted_into(copy.deepcopy(base), tmp_path, anchor, 1.0, progress=False)
    with pytest.raises(ModelError, match="PEFT"):
        merge_sculpted_into(PeftModel.from_pretrained(copy.deepcopy(base), forget), forget, anchor, 1.0, progress=False)


def test_non_lora_adapter_tensors_are_refused(tmp_path: Path) -> None:
    base = tiny_llama()
    dora = save_adapter(base, tmp_path / "dora", seed=8, use_dora=True)
    with pytest.raises(SculptError, match="DoRA"):
        LoraAdapter(dora)
    saved = save_adapter(base, tmp_path / "mts", seed=9, modules_to_save=["lm_head"])
    with pytest.raises(SculptError, match="not a LoRA A/B matrix"):
        LoraAdapter(saved)
    whole = save_adapter(base, tmp_path / "emb", seed=10, target_modules=["embed_tokens"], save_embedding_layers=True)
    with pytest.raises(SculptError, match="save_embedding_layers=False"):
        LoraAdapter(whole)


def test_write_sculpt_report(tmp_path: Path, llama_setup) -> None:
    base, forget, anchor, _ = llama_setup
    report = merge_sculpted_into(copy.deepcopy(base), forget, anchor, 1.0, progress=False)
    path = write_sculpt_report(report, tmp_path / "sculpt")
    data = json.loads(path.read_text())
    assert data["mode"] == "both" and data["views"][0]["k"] == 1.0
    assert set(data["views"][0]["modules"]) == set(LoraAdapter(forget).modules)
    assert data["views"][0]["totals"]["numel"] == sum(s["numel"] for s in data["views"][0]["modules"].values())
    md = (tmp_path / "sculpt" / REPORT_MD).read_text()
    assert "| model.layers.0.self_attn.q_proj |" in md and "**total**" in md


# ---- out of core ------------------------------------------------------------------------------------
def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def bf16_checkpoint(tmp_path_factory: pytest.TempPathFactory, llama_setup) -> Path:
    base = llama_setup[0]
    src = tmp_path_factory.mktemp("ckpt") / "src"
    copy.deepcopy(base).to(torch.bfloat16).save_pretrained(src, max_shard_size="20KB")
    (src / "tokenizer_config.json").write_text("{}")
    return src


@pytest.mark.parametrize("mode,k", [("both", 1.0), ("none", 0.0)])
def test_checkpoint_equals_in_memory_merge_and_leaves_source_alone(tmp_path: Path, llama_setup, bf16_checkpoint: Path,
                                                                    mode: str, k: float) -> None:
    _, forget, anchor, _ = llama_setup
    src = bf16_checkpoint
    shards = sorted(src.glob("model-*.safetensors"))
    assert len(shards) >= 2
    before = digests(src)
    out = tmp_path / "out"
    report = sculpt_checkpoint(src, forget, anchor, out, k, mode, progress=False)
    assert digests(src) == before

    expected = LlamaForCausalLM.from_pretrained(src)
    assert expected.dtype == torch.bfloat16
    ref_report = merge_sculpted_into(expected, forget, anchor, k, mode, progress=False)
    got = LlamaForCausalLM.from_pretrained(out)
    assert got.dtype == torch.bfloat16
    for name, w in got.state_dict().items():
        assert torch.equal(w, expected.state_dict()[name]), name
    # One kernel on the same bf16 weights and factors: every module's stats (shares, ρ, norms, cosine) agree
    # exactly, in every mode.
    assert report.views[0].modules == ref_report.views[0].modules
    assert report.views[0].modules.keys() == set(report.targets)
    masked = report.views[0].totals().share_masked
    assert (masked > 0.05) if mode == "both" else (masked == 0)  # measured: mode both, k 1 masks 23 %

    names = {p.name for p in out.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors.index.json", "tokenizer_config.json",
            REPORT_JSON, REPORT_MD, "manifest.json"} <= names
    assert {p.name for p in shards} <= names
    assert (out / "model.safetensors.index.json").read_bytes() == (src / "model.safetensors.index.json").read_bytes()
    for shard in shards:  # same tensors, names, dtypes and shapes per shard
        a, b = load_file(shard), load_file(out / shard.name)
        assert {n: (t.dtype, t.shape) for n, t in a.items()} == {n: (t.dtype, t.shape) for n, t in b.items()}
        with safe_open(str(out / shard.name), "pt") as fh:
            assert fh.metadata() == {"format": "pt"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial directory left


def test_checkpoint_with_legacy_llava_names(tmp_path: Path, llama_setup) -> None:
    """The adapter was trained on ``model.layers…``; the checkpoint stores ``language_model.model.layers…``."""
    base, forget, anchor, forget2 = llama_setup
    src = tmp_path / "legacy"
    src.mkdir()
    state = {f"language_model.{n}": t.contiguous() for n, t in base.state_dict().items()}
    state["vision_tower.encoder.layers.0.mlp.fc1.weight"] = torch.randn(8, 8)
    save_file(state, src / "model.safetensors", metadata={"format": "pt"})
    report = sculpt_checkpoint(src, forget, anchor, tmp_path / "out", 0.5, forget_adapter_dir2=forget2, k2=2.0,
                               progress=False)
    assert report.targets["model.layers.1.self_attn.v_proj"] == "language_model.model.layers.1.self_attn.v_proj.weight"
    expected = copy.deepcopy(base)
    merge_sculpted_into(expected, forget, anchor, 0.5, forget_adapter_dir2=forget2, k2=2.0, progress=False)
    got = load_file(tmp_path / "out" / "model.safetensors")
    for name, w in expected.state_dict().items():
        assert torch.equal(got[f"language_model.{name}"], w), name
    assert torch.equal(got["vision_tower.encoder.layers.0.mlp.fc1.weight"], state["vision_tower.encoder.layers.0.mlp.fc1.weight"])


def test_checkpoint_errors_and_atomicity(tmp_path: Path, llama_setup, bf16_checkpoint: Path, monkeypatch) -> None:
    _, forget, anchor, _ = llama_setup
    src = bf16_checkpoint
    with pytest.raises(OutputError, match="outside the checkpoint"):
        sculpt_checkpoint(src, forget, anchor, src / "sub", 1.0, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="neither"):
        sculpt_checkpoint(empty, forget, anchor, tmp_path / "out", 1.0, progress=False)
    existing = tmp_path / "exists"
    existing.mkdir()
    with pytest.raises(OutputError, match="already exists"):
        sculpt_checkpoint(src, forget, anchor, existing, 1.0, progress=False)

    calls = {"n": 0}
    real = sculpt_merge._merge_weight

    def dies_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # a run killed half-way
        return real(*args, **kwargs)

    monkeypatch.setattr(sculpt_merge, "_merge_weight", dies_on_third)
    before = digests(src)
    with pytest.raises(KeyboardInterrupt):
        sculpt_checkpoint(src, forget, anchor, tmp_path / "killed", 1.0, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "exists"]  # no output, no partial directory
    assert digests(src) == before


def test_truncated_shard_is_reported(tmp_path: Path, llama_setup, bf16_checkpoint: Path) -> None:
    _, forget, anchor, _ = llama_setup
    src = tmp_path / "broken"
    src.mkdir()
    for p in bf16_checkpoint.iterdir():
        (src / p.name).write_bytes(p.read_bytes())
    shard = sorted(src.glob("model-*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(ModelError, match=shard.name):
        sculpt_checkpoint(src, forget, anchor, tmp_path / "out", 1.0, progress=False)


def test_merge_is_the_same_whatever_the_number_of_threads() -> None:
    """Bug: the rows were split between threads at arbitrary rows, so the weights and the stats of a merge
    changed with the number of threads (MKL's sums depend on a call's row count)."""
    gen = torch.Generator().manual_seed(0)
    rows, cols = 37, 11008  # blocks of 11 rows: 4 of them, the last one short

    def low_rank(r: int) -> LowRankDelta:
        return LowRankDelta(torch.randn(rows, r, generator=gen) * 1e-3, torch.randn(r, cols, generator=gen) / cols**0.5)

    forget, anchor = low_rank(16), low_rank(8)
    weight = torch.randn(rows, cols, generator=gen) * 0.02  # float32: no rounding to hide a difference
    merged = []
    with row_parallel():
        for workers in (1, 2, 3):
            out = torch.empty_like(weight)
            merged.append((out, sculpt_merge._merge_weight(weight, out, [(forget, 1.0)], anchor, "both", 1e-12, workers)))
    for out, stats in merged[1:]:
        assert torch.equal(out, merged[0][0])
        assert stats == merged[0][1]
    assert 0 < merged[0][1][0].share_masked < 1


@pytest.mark.parametrize("workers", [1, 3])
def test_rewrite_shards_transforms_every_tensor_once_in_output_order(tmp_path: Path, workers: int) -> None:
    """The pipeline (reader, transform threads, writer, across shard boundaries) equals a naive rewrite."""
    gen = torch.Generator().manual_seed(0)
    jobs, expected = [], {}
    for s in range(3):
        tensors = {f"s{s}.w{i}": torch.randn(5 + i, 7, generator=gen).to(torch.bfloat16 if i % 2 else torch.float32)
                   for i in range(6)}
        tensors[f"s{s}.ids"] = torch.arange(10, dtype=torch.int64)
        src, dst = tmp_path / f"in-{s}.safetensors", tmp_path / f"out-{s}.safetensors"
        save_file(tensors, src, metadata={"format": "pt"})
        metadata, entries = read_header(src)
        changed = {n for n in tensors if n.endswith(("w1", "w2", "w5"))} if s != 1 else set()  # shard 1: copied only
        expected[dst] = {n: t * 2 if n in changed else t for n, t in tensors.items()}
        jobs.append(ShardRewrite(src, dst, metadata, entries,
                                 {n: lambda t, n=n: (calls.append(n), t.mul_(2), n.upper())[2] for n in changed}))
    calls: list[str] = []
    done: list[tuple[str, object]] = []
    rewrite_shards(jobs, workers, on_done=lambda name, result: done.append((name, result)))

    in_output_order = [n for job in jobs for n in sorted(job.transforms, key=lambda n: read_header(job.dst)[1][n].begin)]
    assert sorted(calls) == sorted(in_output_order) and len(in_output_order) == 6  # each exactly once
    assert done == [(n, n.upper()) for n in in_output_order]
    for dst, tensors in expected.items():
        got = load_file(dst)
        assert got.keys() == tensors.keys()
        for name, t in tensors.items():
            assert got[name].dtype == t.dtype and torch.equal(got[name], t), name
        with safe_open(str(dst), "pt") as fh:
            assert fh.metadata() == {"format": "pt"}


# ---- `smfa sculpt RUN --merge-to DIR` --------------------------------------------------------------------
def fake_smfa_run(root: Path, llama_setup, hyperparameters: dict) -> Path:
    """An unlearn run as `smfa unlearn --method smfa` leaves it, without the training: manifest + adapters."""
    import shutil

    from smfa.rundir import write_manifest

    base, forget, anchor, _ = llama_setup
    vanilla = root / "vanilla"
    base.save_pretrained(vanilla)
    run = root / "run"
    shutil.copytree(forget, run / "adapters" / "forget")
    shutil.copytree(anchor, run / "adapters" / "anchor")
    write_manifest(run, "unlearn", {"model": str(vanilla)}, method="smfa", hyperparameters=hyperparameters)
    return run


def test_merge_to_uses_the_runs_k_and_mode_unless_given(tmp_path: Path, llama_setup, capsys) -> None:
    """Bug: --merge-to sculpted with k 5, mode both whatever the run had used."""
    from smfa.cli.main import main

    base, forget, anchor, _ = llama_setup
    run = fake_smfa_run(tmp_path, llama_setup, {"k": 0.5, "mode": "conflict", "dual": False})
    assert main(["sculpt", str(run), "--merge-to", str(tmp_path / "merged")]) == 0
    config = json.loads((tmp_path / "merged" / "manifest.json").read_text())["config"]
    assert (config["k"], config["mode"]) == (0.5, "conflict")
    expected = copy.deepcopy(base)
    merge_sculpted_into(expected, forget, anchor, 0.5, "conflict", progress=False)
    got = load_file(tmp_path / "merged" / "model.safetensors")
    for name, w in expected.state_dict().items():
        assert torch.equal(got[name], w), name

    assert main(["sculpt", str(run), "--merge-to", str(tmp_path / "given"), "--k", "3", "--mode", "magnitude"]) == 0
    config = json.loads((tmp_path / "given" / "manifest.json").read_text())["config"]
    assert (config["k"], config["mode"]) == (3.0, "magnitude")

    ties_like = fake_smfa_run(tmp_path / "ties", llama_setup, {"density": 0.8})  # a run that records no k
    assert main(["sculpt", str(ties_like), "--merge-to", str(tmp_path / "none")]) == 2
    assert "give --k and --mode" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_merge_to_writes_everything_before_the_rename(tmp_path: Path, llama_setup, monkeypatch) -> None:
    """Bug: merge_to_checkpoint wrote a report into the output after sculpt_checkpoint had renamed it into place."""
    import os

    from smfa.stages.sweep import merge_to_checkpoint

    run = fake_smfa_run(tmp_path, llama_setup, {"k": 1.0, "mode": "both"})
    out = tmp_path / "merged"
    staged: dict[str, set[str]] = {}
    real_replace = os.replace

    def spy(src, dst, *args, **kwargs):  # the atomic rename of a whole directory: what it holds then
        if Path(src).is_dir():
            staged[str(dst)] = {str(p.relative_to(src)) for p in Path(src).rglob("*")}
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", spy)
    merge_to_checkpoint(run, 1.0, "both", out)
    assert staged.keys() == {str(out.resolve())}
    assert {str(p.relative_to(out)) for p in out.rglob("*")} == staged[str(out.resolve())]
    assert json.loads((out / "manifest.json").read_text())["source_run"] == str(run)
    assert {REPORT_JSON, REPORT_MD} <= staged[str(out.resolve())]
