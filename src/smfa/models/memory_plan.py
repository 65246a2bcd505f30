"""Each stage's peak GPU memory, planned without allocating it (issue #35), and the pre-flight refusal.

The model is built from its config on the meta device and its tensors become fake tensors
(``torch._subclasses.fake_tensor``: shapes, dtypes and storages, no memory). One real step of each phase
then runs under PyTorch's own tracker, ``torch.distributed._tools.mem_tracker.MemTracker``, which splits the
live bytes at the peak into parameters, gradients, optimiser state, activations and temporaries
(backward-pass intermediates; in a paired step, where a forget and a retain forward feed one loss, also the
weights' gradients while autograd holds them until both graphs have reached them). A phase runs:

- ``train``: one forward, backward and AdamW step (fused: the HF Trainer's default ``adamw_torch_fused``) at
  the run's batch; each example is the image tokens + :data:`TEXT_TOKENS`, the loss on
  :data:`ANSWER_TOKENS` positions (the answer view), bf16 autocast, gradient checkpointing as
  :func:`smfa.training.engine.enable_checkpointing` sets it, LoRA by :func:`smfa.training.engine.apply_lora`
  (fp32 adapters under the bf16 base); ``paired`` runs a forget and a retain batch into one loss;
- ``fisher``: MMUnlearner's Fisher pass — forward and backward with gradients on the LoRA-target weights and
  one fp32 Fisher accumulator (:func:`smfa.losses.accumulate_fisher`) resident;
- ``masked``: MMUnlearner's training step (a forget and a retain batch into one loss), gradients on the target
  weights, the bool mask resident, and ``MaskedAdamW``'s state — fp32 moments and master copy — on the
  masked share of the entries (:data:`MASKED_SHARE`: the mask's size is data, so it is planned, not traced);
- ``generate``: a batch of :data:`EVAL_BATCH` prompts prefilled with ``max_new_tokens - 1`` more tokens, then
  one decoding step: the KV cache at its largest;
- ``losses``: one forward at :data:`EVAL_BATCH` with logits at the answer positions (evaluation's losses).

Full-size copies a phase holds besides the traced one (the vanilla beside the unlearned model, beside
MMUnlearner's trainee) are counted as resident weights at that phase's peak. LLaVA's check that the prompt's
image tokens match the image features, and Qwen2-VL's image splits, read data, so the image features are computed
by the vision tower and spliced into ``inputs_embeds``. Families other than LLaVA and Qwen2-VL are planned without activations
(weights and trained state only: a lower bound, said so in the plan).

The trace runs on the CPU (fake CUDA tensors need a CUDA build): attention takes PyTorch's CPU flash kernel,
which like the GPU's keeps no sequence × sequence matrix. MemTracker's per-module statistics are skipped (they
cost a pass over every module at every operation); its totals and categories are its own.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from smfa.errors import ConfigError

GB = 1e9
TEXT_TOKENS = 96  # per example besides the image: the bench's longest question (95 characters) and answer (48) with the chat template are under 64 Llama tokens
ANSWER_TOKENS = 32  # answer positions of the loss (the answer view's logits)
NEW_TOKENS = 24  # generated tokens (evaluation's and the reference labels' max_new_tokens)
EVAL_BATCH = 64  # evaluation's and the reference labelling's batch (EvalConfig.batch_size, LABEL_DECODING)
RELEARN_BATCH = 16  # the relearn attack's rows per step (RelearnConfig.batch_size)
IMAGE_SIDE = 336  # the bench's photos (pixels), for families whose image tokens follow the photo's size
MASKED_SHARE = 0.31  # MMUnlearner's masked share of the target entries (0.309 measured on the micro model; docs/scale.md)
TRACED_FAMILIES = ("llava", "qwen2_vl")
CATEGORIES = ("parameters", "gradients", "optimizer", "activations", "temporaries", "other")


@dataclass(frozen=True)
class Usage:
    """Bytes by category at one peak."""

    parameters: int = 0  # weights and buffers of the traced model
    gradients: int = 0
    optimizer: int = 0
    activations: int = 0  # forward tensors (and their recomputation under checkpointing)
    temporaries: int = 0  # backward-pass intermediates (gradients of activations)
    other: int = 0  # method state: MMUnlearner's Fisher accumulator or mask

    @property
    def total(self) -> int:
        return sum(getattr(self, c) for c in CATEGORIES)


@dataclass(frozen=True)
class Phase:
    """One phase of a stage: what the traced step holds at its peak, plus the untraced full-size copies."""

    name: str
    usage: Usage
    resident: int  # weights of the full-size copies beside the traced model
    copies: int  # full-size copies on the device, the traced one included
    traced: bool  # False: weights and trained state only (no activations)

    @property
    def peak(self) -> int:
        return self.usage.total + self.resident


@dataclass(frozen=True)
class StagePlan:
    stage: str
    model: str  # the config's name_or_path or the shape's name
    copy_bytes: int  # one full-size copy's weights in the planned weights' dtype
    phases: tuple[Phase, ...]

    @property
    def worst(self) -> Phase:
        return max(self.phases, key=lambda p: p.peak)

    @property
    def peak(self) -> int:
        return self.worst.peak


@dataclass(frozen=True)
class PhaseSpec:
    """What one phase runs (module docstring)."""

    name: str
    kind: str  # train | fisher | masked | generate | losses | weights
    trainable: str = "none"  # lora | language_model | all | targets | none
    batch: int = 1
    copies: int = 1  # full-size copies on the device, the traced one included
    paired: bool = False


@dataclass(frozen=True)
class PlanInputs:
    """A stage's plan, before anything is loaded: the model's config and what the stage will run."""

    config: Any  # a transformers config (AutoConfig of the model directory)
    stage: str
    dtype: torch.dtype  # the weights' dtype on the device (fp32 master weights for a full fine-tune)
    phases: tuple[PhaseSpec, ...]
    lora_r: int = 16
    checkpointing: bool = True
    image_side: int = IMAGE_SIDE
    masked_share: float = MASKED_SHARE  # MMUnlearner's mask: data, so planned
    trust_remote_code: bool = False
    # What the refusal names as the ways out (the stage's own options).
    ways_out: str = "shard the model over several GPUs (accelerate launch --config_file src/smfa/configs/accelerate/zero3.yaml)"


# ---- building the fake model ---------------------------------------------------------------------------
def _family(config: Any) -> Any:
    from smfa.models.families import family_for_model_type

    return family_for_model_type(config.model_type)


def meta_model(inputs: PlanInputs, trainable: str) -> torch.nn.Module:
    """The model on the meta device in ``inputs.dtype``, with ``trainable`` parameters requiring grad (LoRA
    adapters added for ``lora``) and checkpointing as the stage sets it."""
    from smfa.training.engine import apply_lora, enable_checkpointing

    import copy

    from transformers import AutoModelForImageTextToText

    config = copy.deepcopy(inputs.config)  # the trace may set the vision tower's attention (_image_embeds)
    with torch.device("meta"):  # the class the loader picks (smfa.models.loading), remote code included
        model = AutoModelForImageTextToText.from_config(config, dtype=inputs.dtype, trust_remote_code=inputs.trust_remote_code)
    family = _family(inputs.config)
    if trainable == "lora":
        return apply_lora(model, family, inputs.lora_r, inputs.lora_r, 0.05, inputs.checkpointing)
    names = {"targets": {f"{m}.weight" for m in family.lora_targets(model)}}.get(trainable)
    for name, p in model.named_parameters():
        p.requires_grad_(trainable == "all" or (trainable == "language_model" and family.language_model_pattern in name)
                         or (names is not None and name in names))
    if inputs.checkpointing and trainable != "none":
        enable_checkpointing(model)
    return model


def _fake(model: torch.nn.Module, mode: Any) -> None:
    """Replace every parameter and buffer of the meta ``model`` by a fake CPU tensor (shared ones stay shared)."""
    cpu = torch.device("cpu")
    made: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id → (meta tensor, kept alive so ids stay unique; fake)
    for m in model.modules():
        for store in (m._parameters, m._buffers):
            for name, t in store.items():
                if t is None:
                    continue
                if id(t) not in made:
                    fake = mode.fake_tensor_converter.from_meta_and_device(mode, t.detach(), cpu)
                    if isinstance(t, torch.nn.Parameter):
                        fake = torch.nn.Parameter(fake, requires_grad=t.requires_grad)
                    made[id(t)] = (t, fake)
                store[name] = made[id(t)][1]


def param_bytes(model: torch.nn.Module, trainable_only: bool = False) -> int:
    seen = {id(p): p for p in model.parameters() if p.requires_grad or not trainable_only}
    return sum(p.numel() * p.element_size() for p in seen.values())


def copy_bytes(inputs: PlanInputs) -> int:
    """One full-size copy's weights and buffers in ``inputs.dtype``."""
    model = meta_model(inputs, "none")
    return param_bytes(model) + sum(b.numel() * b.element_size() for b in model.buffers())


# ---- tracing ------------------------------------------------------------------------------------------
class _NoHook:
    def remove(self) -> None:
        pass


def _tracker() -> Any:
    """MemTracker with two changes: gradient hooks go on trainable parameters only (registering a hook on a
    frozen one raises), and only the global peak is kept (its per-module peaks cost a pass over every module
    at every operation: minutes at 7B depth)."""
    from copy import deepcopy

    from torch.distributed._tools.mem_tracker import MemTracker

    class Tracker(MemTracker):
        def _track_module_params_and_buffers(self, module, install_grad_hooks=True):  # type: ignore[override]
            for p in module.parameters():
                if not p.requires_grad and self._param_to_grad_hook_handles.get(p) is None:
                    self._param_to_grad_hook_handles[p] = (_NoHook(), _NoHook())
            return super()._track_module_params_and_buffers(module, install_grad_hooks)

        def _update_peak_stats(self, peak_state):  # type: ignore[override]
            for dev, snap in self._curr_mem_snap.items():
                if self._peak_mem.get(dev, 0) < snap["Total"]:
                    self._peak_mem[dev] = snap["Total"]
                    self._peak_mem_snap[dev] = deepcopy(snap)

    return Tracker()


def _usage(tracker: Any) -> Usage:
    snap = next(iter(tracker.get_tracker_snapshot("peak").values()), {})
    get = lambda key: int(snap.get(key, 0))  # noqa: E731
    from torch.distributed._tools.mem_tracker import _MemRefType as R

    return Usage(parameters=get(R.PARAM) + get(R.BUFFER), gradients=get(R.GRAD), optimizer=get(R.OPT),
                 activations=get(R.ACT), temporaries=get(R.TEMP), other=get(R.OTH))


def _register_plan_attention() -> str:
    """Qwen2-VL's vision attention splits its packed images by reading ``cu_seqlens`` (data); under a
    flash-named implementation it passes them on instead. This one attends within each image of a batch of
    equal images (``max_length_q`` patches each), with SDPA: what the default per-image split does."""
    from transformers import AttentionInterface

    name = "flash_smfa_memory_plan"

    def per_image(module, q, k, v, attention_mask=None, scaling=None, dropout=0.0, max_length_q=None, **_):
        n, heads, dim = q.shape[2] // max_length_q, q.shape[1], q.shape[3]
        split = lambda t: t[0].reshape(heads, n, max_length_q, dim).transpose(0, 1)  # noqa: E731
        out = torch.nn.functional.scaled_dot_product_attention(split(q), split(k), split(v), scale=scaling)
        return out.transpose(1, 2).reshape(1, n * max_length_q, heads, dim), None

    AttentionInterface.register(name, per_image)
    return name


def _image_embeds(model: torch.nn.Module, config: Any, batch: int, side: int) -> torch.Tensor:
    """[batch, image tokens, hidden]: one photo per example through the vision tower and projector."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if config.model_type == "llava":
        vision = config.vision_config
        pixels = torch.zeros(batch, 3, vision.image_size, vision.image_size, dtype=inner.dtype)
        feats = inner.model.get_image_features(pixel_values=pixels, vision_feature_layer=config.vision_feature_layer,
                                               vision_feature_select_strategy=config.vision_feature_select_strategy)
        feats = getattr(feats, "pooler_output", feats)
        return torch.stack(list(feats)) if isinstance(feats, (list, tuple)) else feats
    from transformers.vision_utils import get_vision_attention_seqlens, get_vision_position_ids

    vision = config.vision_config
    visual = inner.model.visual
    with torch._subclasses.fake_tensor.unset_fake_temporarily():  # real index tensors, computed from the grid
        grid = torch.tensor([[1, side // vision.patch_size, side // vision.patch_size]] * batch)
        positions = get_vision_position_ids(grid, visual.spatial_merge_size)
        cu_seqlens, _ = get_vision_attention_seqlens(grid, visual.config)
        patches = int(grid[0].prod())
    visual.config._attn_implementation = _register_plan_attention()
    pixels = torch.zeros(batch * patches, vision.in_channels * vision.temporal_patch_size * vision.patch_size ** 2,
                         dtype=inner.dtype)
    out = visual(pixels, grid_thw=grid, position_ids=positions, cu_seqlens=cu_seqlens, max_seqlen=patches)
    merged = getattr(out, "pooler_output", out)
    return merged.reshape(batch, -1, merged.shape[-1])


def _embeds(model: torch.nn.Module, config: Any, batch: int, text: int, side: int) -> torch.Tensor:
    """inputs_embeds of a batch: the image's features spliced after the first text tokens."""
    image = _image_embeds(model, config, batch, side)
    ids = torch.zeros(batch, text, dtype=torch.long)
    text_embeds = model.get_input_embeddings()(ids)
    return torch.cat([text_embeds[:, :4], image.to(text_embeds.dtype), text_embeds[:, 4:]], dim=1)


def _answer_loss(model: torch.nn.Module, config: Any, batch: int, side: int) -> torch.Tensor:
    embeds = _embeds(model, config, batch, TEXT_TOKENS, side)
    length = embeds.shape[1]
    keep = torch.arange(length - ANSWER_TOKENS - 1, length - 1)
    logits = model(inputs_embeds=embeds, attention_mask=torch.ones(batch, length, dtype=torch.long),
                   logits_to_keep=keep, use_cache=False).logits
    labels = torch.zeros(batch * ANSWER_TOKENS, dtype=torch.long)
    return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), labels)


def _run(spec: PhaseSpec, inputs: PlanInputs, model: torch.nn.Module, tracker: Any) -> None:
    """The traced work of ``spec`` (module docstring) on the fake ``model``."""
    config, side = inputs.config, inputs.image_side
    autocast = torch.autocast("cpu", dtype=torch.float16 if inputs.dtype == torch.float16 else torch.bfloat16)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if spec.kind in ("train", "fisher", "masked"):
        fisher: dict[str, torch.Tensor] = {}
        if spec.kind == "fisher":
            fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in model.named_parameters() if p.requires_grad}
            tracker.track_external(*fisher.values())
        if spec.kind == "masked":
            masks = [torch.zeros_like(p, dtype=torch.bool) for p in trainable]
            tracker.track_external(*masks)
            holder = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))])  # MaskedAdamW's state, counted as optimiser state
            holder.state[0] = {"masked": torch.empty(masked_state_bytes(trainable, inputs.masked_share), dtype=torch.uint8)}
            tracker.track_external(holder)
        optimizer = torch.optim.AdamW(trainable, lr=1e-4, fused=True) if spec.kind == "train" else None
        with tracker:
            with autocast:
                loss = _answer_loss(model, config, spec.batch, side)
                if spec.paired:
                    tracker.reset_mod_stats()  # its per-module records refuse a second call of the root module
                    loss = loss + _answer_loss(model, config, spec.batch, side)
            loss.backward()
            if spec.kind == "fisher":
                from smfa.losses import accumulate_fisher

                accumulate_fisher(fisher, ((n, p) for n, p in model.named_parameters() if p.requires_grad))
            if optimizer is not None:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        return
    model.eval()
    with tracker, torch.inference_mode(), autocast:
        if spec.kind == "losses":
            _answer_loss(model, config, spec.batch, side)
            return
        prompt = _embeds(model, config, spec.batch, TEXT_TOKENS - ANSWER_TOKENS + NEW_TOKENS - 1, side)
        mask = torch.ones(spec.batch, prompt.shape[1] + 1, dtype=torch.long)
        out = model(inputs_embeds=prompt, attention_mask=mask[:, :-1], use_cache=True, logits_to_keep=1)
        step = torch.zeros(spec.batch, 1, dtype=torch.long)
        tracker.reset_mod_stats()
        model(input_ids=step, attention_mask=mask, past_key_values=out.past_key_values, use_cache=True, logits_to_keep=1)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """transformers' notes about use_cache under checkpointing, and ModTracker's about recomputed modules."""
    import warnings

    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(level)


class _Share:
    """Stands for a bool mask where only its count is read (``int(mask.sum())``): ``share`` of the entries."""

    def __init__(self, p: torch.Tensor, share: float):
        self.count = int(share * p.numel())

    def sum(self) -> int:
        return self.count


def masked_state_bytes(params: list[torch.Tensor], share: float) -> int:
    """What ``MaskedAdamW`` holds for ``params`` masked at ``share`` (its own count,
    :func:`smfa.optim.masked_adamw_state_bytes`: fp32 moments, and an fp32 master copy of bf16 weights)."""
    from smfa.optim import masked_adamw_state_bytes

    return masked_adamw_state_bytes({p: _Share(p, share) for p in params})  # type: ignore[misc]


def _untraced(spec: PhaseSpec, model: torch.nn.Module, share: float) -> Usage:
    """Weights and trained state of ``spec`` by arithmetic: gradients in the trained parameters' dtype, AdamW's
    two moments (on the masked share for ``masked``), the fp32 Fisher or the bool mask as ``other``."""
    trained = {id(p): p for p in model.parameters() if p.requires_grad}.values()
    grads, entries = sum(p.numel() * p.element_size() for p in trained), sum(p.numel() for p in trained)
    if spec.kind not in ("train", "fisher", "masked"):
        grads = entries = 0
    optimizer = {"train": 2 * grads, "masked": masked_state_bytes(list(trained), share)}.get(spec.kind, 0)
    other = {"fisher": 4 * entries, "masked": entries}.get(spec.kind, 0)
    return Usage(parameters=param_bytes(model), gradients=grads, optimizer=optimizer, other=other)


def phase_usage(inputs: PlanInputs, spec: PhaseSpec, trace: bool = True) -> tuple[Usage, bool]:
    """What the phase's own model holds at its peak, and whether it was traced (``trace`` and a traced
    family) or counted by arithmetic (weights and trained state only)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    if spec.kind == "weights":
        return Usage(), True
    model = meta_model(inputs, spec.trainable)
    if not (trace and inputs.config.model_type in TRACED_FAMILIES):
        return _untraced(spec, model, inputs.masked_share), False
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    _fake(model, mode)
    tracker = _tracker()
    with _quiet(), mode:
        tracker.track_external(model)
        _run(spec, inputs, model, tracker)
    return _usage(tracker), True


def plan_phase(inputs: PlanInputs, spec: PhaseSpec, copy: int | None = None, trace: bool = True,
               cache: dict[tuple, tuple[Usage, bool]] | None = None) -> Phase:
    """One phase's peak: its model's usage (:func:`phase_usage`) plus the full-size copies beside it.
    ``cache`` (one per ``inputs``) reuses the usage of phases that run the same step."""
    copy = copy_bytes(inputs) if copy is None else copy
    key = (spec.kind, spec.trainable, spec.batch, spec.paired, trace)
    if cache is None or key not in cache:
        found = phase_usage(inputs, spec, trace)
        if cache is None:
            cache = {}
        cache[key] = found
    usage, traced = cache[key]
    resident = (spec.copies - (spec.kind != "weights")) * copy
    return Phase(spec.name, usage, resident, spec.copies, traced)


def plan(inputs: PlanInputs, trace: bool = True, cache: dict[tuple, tuple[Usage, bool]] | None = None) -> StagePlan:
    """Every phase of ``inputs``' stage (see :func:`plan_phase`)."""
    copy = copy_bytes(inputs)
    phases = tuple(plan_phase(inputs, spec, copy, trace, cache) for spec in inputs.phases)
    return StagePlan(inputs.stage, str(getattr(inputs.config, "_name_or_path", "") or inputs.config.model_type), copy, phases)


def check_consistent(stage: StagePlan) -> None:
    """A phase's planned peak is never below its full-size copies' weights; raises otherwise (a planning bug)."""
    for phase in stage.phases:
        if phase.peak < phase.copies * stage.copy_bytes:
            raise RuntimeError(f"memory plan of {stage.stage}/{phase.name}: peak {phase.peak / GB:.1f} GB is below its "
                               f"{phase.copies} full-size copies' weights ({phase.copies * stage.copy_bytes / GB:.1f} GB)")


# ---- the stages' phases ----------------------------------------------------------------------------------
def finetune_phases(lora: bool, batch: int) -> tuple[PhaseSpec, ...]:
    what = "LoRA" if lora else "full"
    return (PhaseSpec(f"train ({what}, batch {batch})", "train", "lora" if lora else "all", batch),)


def unlearn_phases(method: str, lora: bool, batch: int, labels: bool, evaluate: bool, paired: bool,
                   eval_batch: int = EVAL_BATCH) -> tuple[PhaseSpec, ...]:
    """The phases of ``smfa unlearn``: reference labels (the vanilla generates), training (a LoRA on the
    vanilla's shared-weights view; a trainee copy beside the vanilla; MMUnlearner's with the vanilla in host
    memory), the merge (vanilla + unlearned) and the evaluation (the unlearned model beside the vanilla)."""
    out = [PhaseSpec(f"reference labels (generate, batch {EVAL_BATCH})", "generate", batch=EVAL_BATCH)] if labels else []
    both = " × 2" if paired else ""
    if method == "mmunlearner":  # the vanilla waits in host memory from the Fisher passes to the end of training
        out += [PhaseSpec("copy of the vanilla (the trainee)", "weights", copies=2),
                PhaseSpec(f"Fisher pass (batch {batch}), the vanilla in host memory", "fisher", "targets", batch),
                PhaseSpec(f"masked training (batch {batch} × 2), the vanilla in host memory", "masked", "targets", batch,
                          paired=True)]
    elif lora:
        out += [PhaseSpec(f"train (LoRA, batch {batch}{both})", "train", "lora", batch, paired=paired),
                PhaseSpec("merge (vanilla + unlearned)", "weights", copies=2)]
    else:
        out.append(PhaseSpec(f"train (language model, batch {batch}{both}) beside the vanilla", "train", "language_model",
                             batch, copies=2, paired=paired))
    return tuple(out) + (eval_phases(relearn=False, batch=eval_batch) if evaluate else ())


def eval_phases(relearn: bool, beside: tuple[str, ...] = ("generate", "losses"), batch: int = EVAL_BATCH) -> tuple[PhaseSpec, ...]:
    """Evaluation: the model generates and scores answer losses; the steps named in ``beside`` run with a
    second full-size model resident (``smfa unlearn``'s own evaluation: the vanilla throughout; ``smfa eval
    --attacks``: the vanilla's or oracle's losses, loaded and released); ``relearn``: the relearn attack's
    LoRA, injected into the evaluated model."""
    def step(kind: str, what: str) -> PhaseSpec:
        two = kind in beside
        return PhaseSpec(f"evaluation: {what} (batch {batch}){' beside the vanilla' if two else ''}", kind, batch=batch,
                         copies=2 if two else 1)

    out = (step("generate", "generate"), step("losses", "answer losses"))
    return out + ((PhaseSpec(f"relearn attack (LoRA, batch {RELEARN_BATCH})", "train", "lora", RELEARN_BATCH),) if relearn else ())


# ---- the pre-flight refusal ------------------------------------------------------------------------------
def device_memory(device: torch.device) -> int | None:
    """Bytes of memory of ``device`` when a stage plans for it: a CUDA device of a single-process run. None on
    the CPU and under a launch of several processes (ZeRO-3/FSDP shard what the plan counts whole)."""
    if device.type != "cuda" or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return None
    return int(torch.cuda.get_device_properties(device).total_memory)


def load_config(source: str, trust_remote_code: bool = False) -> Any | None:
    """The transformers config of a run directory, model directory or ``hf:`` id, read alone (no weights);
    None for the built-in tiny model and for a path that does not exist (the loader says so in its words)."""
    from transformers import AutoConfig

    from smfa.errors import ModelError
    from smfa.models.loading import _check_model_dir, hub_id, model_dir_of

    repo = hub_id(source) if str(source) != "tiny" else None
    local = None if repo is not None or str(source) == "tiny" else model_dir_of(source)
    if local is not None:
        _check_model_dir(local)  # the loader's own checks and messages
    elif repo is None:
        return None
    try:
        return AutoConfig.from_pretrained(str(local or repo), trust_remote_code=trust_remote_code,
                                          local_files_only=local is not None)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot read the config of {source}: {str(exc).splitlines()[0]}") from exc


def check_fits(inputs: PlanInputs | None, device: torch.device) -> None:
    """Refuse, in one line and before any weight is loaded, a stage whose planned peak exceeds ``device``'s
    memory (:func:`device_memory`; nothing is checked where it is None, nor for ``inputs`` None). The weights
    and trained state are counted first, by arithmetic; the traced plan, with activations and KV caches
    (about 40 s at 7B), only when they fit."""
    capacity = device_memory(device)
    if capacity is None or inputs is None:
        return
    copy = copy_bytes(inputs)
    for trace in (False, True):
        worst = max((plan_phase(inputs, spec, copy, trace) for spec in inputs.phases), key=lambda p: p.peak)
        if worst.peak > capacity:
            what = "" if worst.traced else " for weights and trained state alone"
            copies = f"{worst.copies} full-size cop{'y' if worst.copies == 1 else 'ies'} of {copy / GB:.1f} GB"
            raise ConfigError(f"{inputs.stage} needs {worst.peak / GB:.1f} GB{what} at its peak — {worst.name}: "
                              f"{copies} — but {device} has {capacity / GB:.1f} GB: {inputs.ways_out}")


ZERO3 = "accelerate launch --config_file src/smfa/configs/accelerate/zero3.yaml on several GPUs"


def finetune_inputs(cfg: Any, placement: Any) -> PlanInputs | None:
    """The plan of ``smfa finetune`` with ``cfg`` (a FinetuneConfig) on ``placement`` (the weights' placement
    after :func:`smfa.models.placement.master_weights`: fp32 master weights for a full fine-tune on a GPU);
    None where nothing is planned (:func:`device_memory`, the built-in tiny model)."""
    if device_memory(placement.device) is None:
        return None
    config = load_config(cfg.model, cfg.trust_remote_code)
    if config is None:
        return None
    return PlanInputs(config, "smfa finetune" + (" --lora" if cfg.lora else " (full fine-tuning)"), placement.dtype,
                      finetune_phases(cfg.lora, cfg.batch_size), lora_r=cfg.lora_r, trust_remote_code=cfg.trust_remote_code,
                      checkpointing=cfg.gradient_checkpointing is not False,
                      ways_out=f"fine-tune LoRA adapters instead (--lora), or shard the model ({ZERO3})")


def unlearn_inputs(cfg: Any, method: Any, budget: str, placement: Any) -> PlanInputs | None:
    """The plan of ``smfa unlearn`` with ``cfg`` (an UnlearnConfig), the method (its registry object) and the
    resolved reference budget, under the real-checkpoint layer of the method's config (a model too small for
    that layer fits any GPU anyway); None where nothing is planned."""
    if device_memory(placement.device) is None:
        return None
    config = load_config(cfg.model, cfg.trust_remote_code)
    if config is None:
        return None
    hp = method.config(cfg.method_config, cfg.params, target=cfg.target, reference=budget, real=True)
    paired = hasattr(method, "loss")  # a LossMethod: a forget and a retain batch per step
    phases = unlearn_phases(method.name, hp.lora, hp.batch_size, budget != "none", cfg.evaluate, paired)
    if method.name == "mmunlearner":  # weight entries, and a saliency mask FSDP/ZeRO refuse (smfa.training.trainer)
        ways_out = "MMUnlearner trains weight entries and cannot be sharded: use a GPU with more memory or a LoRA method (--method smfa)"
    else:
        ways_out = f"train LoRA adapters (--param lora=true), or shard the model ({ZERO3})"
    return PlanInputs(config, f"smfa unlearn --method {method.name}", placement.dtype, phases, lora_r=hp.lora_r,
                      checkpointing=bool(hp.gradient_checkpointing), ways_out=ways_out,
                      trust_remote_code=cfg.trust_remote_code)
