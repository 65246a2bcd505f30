"""LoRA adapters as PEFT saves them (``adapter_config.json`` + ``adapter_model.safetensors``), read one
module at a time: each module's update ΔW comes back as float32 low-rank factors (:class:`LowRankDelta`)
with PEFT's scaling folded in, so no full dense update is ever built unless asked for."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from smfa.errors import SculptError
from smfa.sculpt.mask import LowRankDelta

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."
_LORA_KEY = re.compile(r"^(?P<module>.+)\.(?P<part>lora_A|lora_B)\.weight$|^(?P<emb>.+)\.(?P<epart>lora_embedding_[AB])$")


@dataclass(frozen=True)
class _LoraKeys:
    key_a: str
    key_b: str
    embedding: bool  # lora_embedding_A/B: ΔW = (B @ A)ᵀ


class LoraAdapter:
    """A LoRA adapter directory saved by PEFT (``adapter_config.json`` + ``adapter_model.safetensors``).

    Module names are the adapted modules' paths in the base model (PEFT's ``base_model.model.`` prefix
    stripped), e.g. ``model.layers.0.self_attn.q_proj``. Tensors are read per module on demand.
    """

    def __init__(self, adapter_dir: str | Path, role: str = "adapter") -> None:
        self.path = Path(adapter_dir)
        self.role = role
        config_path, weights_path = self.path / ADAPTER_CONFIG, self.path / ADAPTER_WEIGHTS
        if not config_path.is_file():
            raise SculptError(
                f"{role} {self.path} is not a PEFT adapter directory (no {ADAPTER_CONFIG}); pass the directory "
                "written by save_pretrained()"
            )
        if not weights_path.is_file():
            hint = " (it has adapter_model.bin: re-save with save_pretrained(safe_serialization=True))" if (
                self.path / "adapter_model.bin").is_file() else ""
            raise SculptError(f"{role} {self.path} has no {ADAPTER_WEIGHTS}{hint}")
        try:
            self.config = json.loads(config_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise SculptError(f"{config_path} is not valid JSON (line {exc.lineno}); re-save the adapter") from exc
        self._weights = weights_path
        self._check_config()
        self._keys, self._shapes = self._index()
        self.modules: tuple[str, ...] = tuple(sorted(self._keys))

    def _check_config(self) -> None:
        cfg, where = self.config, f"{self.role} {self.path}"
        if cfg.get("peft_type", "LORA") != "LORA":
            raise SculptError(f"{where} is a {cfg.get('peft_type')} adapter; sculpting needs a LoRA adapter")
        unsupported = {
            "use_dora": "DoRA rescales the weight, so its update is not scaling·B@A",
            "lora_bias": "LoRA biases are not part of the sculpted update",
            "target_parameters": "LoRA on raw parameters (target_parameters) is not supported",
            "layer_replication": "layer replication changes the model's layers",
        }
        for key, why in unsupported.items():
            if cfg.get(key):
                raise SculptError(f"{where} was trained with {key}={cfg[key]!r}: {why}; train a plain LoRA adapter")

    def _index(self) -> tuple[dict[str, _LoraKeys], dict[str, tuple[int, int]]]:
        parts: dict[str, dict[str, str]] = {}
        shapes: dict[str, tuple[int, ...]] = {}
        with safe_open(str(self._weights), framework="pt") as fh:
            for key in fh.keys():
                short = key[len(_PEFT_PREFIX):] if key.startswith(_PEFT_PREFIX) else key
                match = _LORA_KEY.match(short)
                if match is None and short.endswith(".base_layer.weight"):
                    raise SculptError(
                        f"{self.role} {self._weights} holds the full weight {key!r}: PEFT saves targeted or resized "
                        "embedding layers whole, and a sculpt cannot tell what was trained in it; if the vocabulary "
                        "was not resized, re-save with save_pretrained(save_embedding_layers=False)"
                    )
                if match is None:
                    raise SculptError(
                        f"{self.role} {self._weights} holds tensor {key!r}, which is not a LoRA A/B matrix "
                        "(modules_to_save, trainable tokens, DoRA or bias?); sculpting merges plain LoRA only"
                    )
                module = match["module"] or match["emb"]
                part = (match["part"] or match["epart"]).replace("lora_embedding_", "emb_").replace("lora_", "")
                parts.setdefault(module, {})[part] = key
                shapes[key] = tuple(fh.get_slice(key).get_shape())
        keys: dict[str, _LoraKeys] = {}
        out_shapes: dict[str, tuple[int, int]] = {}
        for module, found in parts.items():
            embedding = "emb_A" in found or "emb_B" in found
            a, b = (found.get("emb_A"), found.get("emb_B")) if embedding else (found.get("A"), found.get("B"))
            if a is None or b is None:
                raise SculptError(f"{self.role} {self._weights}: module {module!r} has a LoRA A or B matrix but not both")
            shape_a, shape_b = shapes[a], shapes[b]
            if len(shape_a) != 2 or len(shape_b) != 2:
                raise SculptError(
                    f"{self.role} {self._weights}: module {module!r} has LoRA matrices of shapes {shape_a} and "
                    f"{shape_b}; only Linear and Embedding layers can be sculpted (not convolutions)"
                )
            if shape_a[0] != shape_b[1]:
                raise SculptError(f"{self.role} {self._weights}: module {module!r} has inconsistent ranks {shape_a} vs {shape_b}")
            keys[module] = _LoraKeys(a, b, embedding)
            transposed = embedding or bool(self.config.get("fan_in_fan_out", False))
            out_shapes[module] = (shape_a[1], shape_b[0]) if transposed else (shape_b[0], shape_a[1])
        if not keys:
            raise SculptError(f"{self.role} {self._weights} holds no LoRA matrices")
        return keys, out_shapes

    def shape(self, module: str) -> tuple[int, int]:
        """Shape of the module's dense update ΔW (that of the base weight it is added to)."""
        return self._shapes[module]

    def scaling(self, module: str, rank: int) -> float:
        """PEFT's scaling: alpha / r, or alpha / √r with ``use_rslora``; ``alpha_pattern`` honoured."""
        alpha = self.config.get("lora_alpha", 8)
        for pattern, value in (self.config.get("alpha_pattern") or {}).items():
            if re.match(rf"(.*\.)?({pattern})$", module):  # PEFT's get_pattern_key (importing peft costs seconds)
                alpha = value
                break
        return float(alpha) / (math.sqrt(rank) if self.config.get("use_rslora") else rank)

    def delta(self, module: str) -> LowRankDelta:
        """The module's update as float32 low-rank factors (reads only this module's two tensors)."""
        keys = self._keys[module]
        with safe_open(str(self._weights), framework="pt") as fh:
            a = fh.get_tensor(keys.key_a).to(torch.float32, copy=True)
            b = fh.get_tensor(keys.key_b).to(torch.float32, copy=True)
        if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
            raise SculptError(f"{self.role} {self.path}: module {module!r} has NaN or infinite LoRA weights; retrain it")
        scale = self.scaling(module, a.shape[0])
        if keys.embedding or self.config.get("fan_in_fan_out", False):
            return LowRankDelta(a.T.mul(scale).contiguous(), b.T.contiguous())  # ΔW = (B @ A)ᵀ · scaling
        return LowRankDelta(b.mul_(scale), a)


def check_compatible(forget: LoraAdapter, anchor: LoraAdapter) -> None:
    """Both adapters must adapt the same modules with updates of the same shapes (ranks may differ)."""
    for module in sorted(set(forget.modules) ^ set(anchor.modules)):
        has, lacks = (forget, anchor) if module in forget.modules else (anchor, forget)
        raise SculptError(
            f"module {module!r} is adapted by the {has.role} ({has.path}) but not by the {lacks.role} "
            f"({lacks.path}); train both adapters with the same target_modules"
        )
    for module in forget.modules:
        if forget.shape(module) != anchor.shape(module):
            raise SculptError(
                f"module {module!r}: the {forget.role} ({forget.path}) updates a weight of shape "
                f"{forget.shape(module)} but the {anchor.role} ({anchor.path}) one of shape {anchor.shape(module)}; "
                "the adapters were trained on different base models"
            )


def dense_deltas(adapter_dir: str | Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(weight name, ΔW)`` one module at a time (float32), e.g. ``model.layers.0.self_attn.q_proj.weight``."""
    adapter = LoraAdapter(adapter_dir)
    for module in adapter.modules:
        yield f"{module}.weight", adapter.delta(module).dense()


def paired_dense_deltas(
    forget_adapter_dir: str | Path, anchor_adapter_dir: str | Path, device: torch.device | str = "cpu"
) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """Yield ``(weight name, ΔW_f, ΔW_a)`` one module at a time, after checking the adapters match; each
    dense delta is built from its low-rank factors on ``device`` (the model's, so a GPU merge stays there)."""
    forget = LoraAdapter(forget_adapter_dir, "forget adapter")
    anchor = LoraAdapter(anchor_adapter_dir, "anchor adapter")
    check_compatible(forget, anchor)
    for module in forget.modules:
        yield f"{module}.weight", forget.delta(module).to(device).dense(), anchor.delta(module).to(device).dense()

