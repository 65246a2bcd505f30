"""Subcommands of the pipeline stages: ``finetune``, ``eval``, ``unlearn``, ``sculpt``, ``compare``.
Each parses its options into the stage's config dataclass and calls one function."""

from __future__ import annotations

import argparse
import os
from typing import Any

from smfa.bench.schema import TARGETS, TRAINING_PEOPLE
from smfa.cli.options import (
    FORGET_HELP,
    RELEARN_OPTIONS,
    add_attack_options,
    add_from_root,
    add_key_file,
    add_method_params,
    add_new_chain,
    add_verify_options,
    bool_pair,
    command,
    overrides,
    verify_overrides,
    run_stage,
)
from smfa.config import parse_params, resolve_config
from smfa.eval.judges import available_judges
from smfa.models.placement import add_placement_options, is_main_process
from smfa.sculpt.mask import MODES
from smfa.reference import REFERENCE_BUDGETS
from smfa.training.samplers import SAMPLERS


def _bench_model_out(p: argparse.ArgumentParser, bench: str, model: str, out: str) -> None:
    """``--bench``, ``--model`` and ``--out`` of a command that reads a bench and a model and writes a run."""
    p.add_argument("--bench", help=bench)
    p.add_argument("--model", help=model)
    p.add_argument("--out", help=out)


# ---- finetune -----------------------------------------------------------------------------------
def _finetune(args: argparse.Namespace) -> int:
    """train the vanilla model (memorises the bench) or the oracle (--people retain)

    Fine-tune a model on the bench: image-memory, text-memory, understanding, general-VQA and refusal questions.
    --people retain trains the oracle that never sees the forget people."""
    from smfa.stages.finetune import FinetuneConfig, finetune

    names = ["bench", "model", "out", "people", "forget", "exclude", "slices", "lora", "lora_r", "lora_alpha", "steps", "batch_size",
             "grad_accum", "lr", "sampler", "augment", "seed", "save_steps", "gradient_checkpointing", "bf16", "trust_remote_code",
             "overwrite", "resume", "pretrained", "device", "dtype"]
    return run_stage(FinetuneConfig, finetune, args.config, overrides(args, names), "model written to {out}")


def _add_finetune(sub: Any) -> None:
    p = command(sub, "finetune", _finetune)
    _bench_model_out(p, "bench directory (smfa bench build)",
                     "'tiny' (built-in, no download) or a HF model directory, or hf:ORG/NAME to download from the hub "
                     "(default tiny)", "run directory to write")
    p.add_argument("--people", choices=TRAINING_PEOPLE, help="all = vanilla (default); retain = oracle")
    p.add_argument("--forget", help=f"forget split the oracle leaves out (default 15); {FORGET_HELP}")
    p.add_argument("--exclude", metavar="IDS", help="person ids never trained on (a comma list or a file with one id a "
                   "line): what smfa forget --exact retrains without")
    p.add_argument("--slices", type=int, metavar="S",
                   help="train the people in S ordered slices (SISA), a checkpoint after each, so that an exact "
                        "deletion request retrains only from the earliest slice holding one of its people; the "
                        "steps are spread over the stages in proportion to their rows (default 1: one run)")
    bool_pair(p, "lora", "LoRA on the language model", "full fine-tuning (default)")
    p.add_argument("--lora-r", type=int, dest="lora_r")
    p.add_argument("--lora-alpha", type=int, dest="lora_alpha")
    p.add_argument("--steps", type=int, help="optimiser steps (default 6000)")
    p.add_argument("--batch-size", type=int, dest="batch_size", help="per-device batch size (default 32)")
    p.add_argument("--grad-accum", type=int, dest="grad_accum")
    p.add_argument("--lr", type=float, help="learning rate (default 1e-3 for the tiny model)")
    p.add_argument("--sampler", choices=SAMPLERS,
                   help="random batches (default), or batches of similar length in random order: 1.45x faster "
                        "on the tiny bench, general VQA 70 -> 64 %% (benchmarks/README.md)")
    p.add_argument("--augment", type=int, metavar="N",
                   help="N extra copies of every row with an image, each seen through its own fixed random view "
                        "(shift, scale, rotation, brightness; default 0)")
    p.add_argument("--seed", type=int)
    p.add_argument("--no-pretrained", dest="pretrained", action="store_false", default=None,
                   help="train the tiny vanilla even when a shipped one fits this bench and recipe")
    p.add_argument("--save-steps", type=int, dest="save_steps", help="checkpoint every N steps (resume points)")
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                   dest="gradient_checkpointing",
                   help="recompute activations in the backward pass (default: on for a real checkpoint, off for tiny)")
    p.add_argument("--bf16", action="store_true", default=None, help="bf16 autocast (mixed precision) in training")
    add_placement_options(p)
    p.add_argument("--trust-remote-code", action="store_true", default=None, dest="trust_remote_code",
                   help="allow a hub model's own code to run (off by default)")
    p.add_argument("--overwrite", action="store_true", default=None, help="replace an existing --out")
    p.add_argument("--resume", action="store_true", default=None,
                   help="continue a killed run from its last checkpoint (with the options it was started with)")
    p.add_argument("--config", help="YAML recipe with FinetuneConfig fields; command-line options override it")


# ---- unlearn ------------------------------------------------------------------------------------
def _unlearn(args: argparse.Namespace) -> int:
    """unlearn the forget people from a vanilla model with SMFA or a baseline, then evaluate

    Run an unlearning method on a vanilla run. Methods: {methods}. Hyper-parameters: the method's shipped
    tiny-preset YAML, then --method-config, then --param/--k/... ."""
    from smfa.stages.unlearn import UnlearnConfig, unlearn

    params = parse_params(args.param)
    for name in ("k", "mode", "dual", "lr", "epochs", "lora"):
        if getattr(args, name, None) is not None:
            params[name] = getattr(args, name)
    names = ["bench", "model", "out", "method", "forget", "forget_people", "target", "anchor_size", "reference", "seed", "method_config",
             "eval_limit", "judge", "oracle", "attacks", *RELEARN_OPTIONS, "trust_remote_code", "overwrite", "device",
             "dtype", "audit_key_file", "new_chain", "from_root"]
    over = overrides(args, names)
    over["params"] = params
    over["evaluate"] = args.evaluate
    over.update(verify_overrides(args))
    cfg = resolve_config(UnlearnConfig, args.config, over)
    if not args.verify:
        cfg.leak_target = None
    out = unlearn(cfg)
    if not is_main_process():
        print(f"rank {os.environ.get('RANK')}: trained; rank 0 writes {out}")
        return 0
    print(f"unlearned model written to {out}/model" + (f"; evaluation in {out}/eval/report.md" if cfg.evaluate else ""))
    return 0


def _add_unlearn(sub: Any) -> None:
    from smfa.methods import method_names

    p = command(sub, "unlearn", _unlearn, methods=", ".join(method_names()))
    p.add_argument("--method", help="method name (default smfa)")
    _bench_model_out(p, "bench directory", "vanilla run directory (smfa finetune) or model directory", "run directory to write")
    p.add_argument("--forget", help=f"forget split (default 10; val = tuning only); {FORGET_HELP}")
    p.add_argument("--forget-people", dest="forget_people", metavar="IDS",
                   help="forget these people instead of a split: comma list or a file with one person id per line "
                        "(a deletion request; see also smfa forget)")
    p.add_argument("--target", choices=TARGETS, help="all: forget photo and name knowledge (default); visual: forget the photo link only")
    p.add_argument("--k", type=float, help="SMFA sculpt strength (larger k = stronger forgetting)")
    p.add_argument("--mode", choices=MODES, help="SMFA mask (default both)")
    p.add_argument("--dual", action="store_true", default=None, help="SMFA: image-view + text-view MFAs, averaged")
    p.add_argument("--lr", type=float)
    p.add_argument("--epochs", type=float)
    bool_pair(p, "lora", "LoRA on the language model", "full fine-tuning of the language model")
    p.add_argument("--anchor-size", type=int, dest="anchor_size", help="size of the few-shot retain anchor D_r^few")
    p.add_argument("--reference", choices=REFERENCE_BUDGETS,
                   help="data budget: auto (default: self-full for a method with a retain term on a bench with a "
                        "reference pool, else none), none (the paper recipe: the anchor only), self (+ the reference "
                        "pool's memory questions answered by the vanilla itself, for every method's retain term) or "
                        "self-full (+ their understanding questions and general-VQA training pictures, answered likewise)")
    add_method_params(p)
    p.add_argument("--seed", type=int)
    p.add_argument("--no-eval", dest="evaluate", action="store_false", default=True, help="skip the evaluation")
    p.add_argument("--eval-limit", type=int, dest="eval_limit", help="at most N questions per evaluation set (default 200)")
    p.add_argument("--judge", choices=available_judges())
    p.add_argument("--oracle", help="oracle run (retain-only) for the forget-quality KS test (and the mia attack's "
                                    "PrivLeak)")
    add_attack_options(p, "also run the attack suite on the unlearned model ('all' or a comma list: paraphrase,"
                          "unseen_image,cross_modal,prompt,relearn,quantize,mia; relearn_sweep only by name); recorded "
                          "in the audit")
    add_placement_options(p)
    p.add_argument("--trust-remote-code", action="store_true", default=None, dest="trust_remote_code")
    p.add_argument("--overwrite", action="store_true", default=None, help="replace an existing --out")
    add_key_file(p)
    add_new_chain(p)
    add_from_root(p)
    add_verify_options(p)
    p.add_argument("--config", help="YAML recipe with UnlearnConfig fields")


# ---- eval ---------------------------------------------------------------------------------------
def _eval(args: argparse.Namespace) -> int:
    """evaluate a model on every evaluation set of the bench (metrics.json, report.md)

    Batched greedy generation over the forget/retain × image-memory/text-memory/understanding sets (train
    phrasing, paraphrase, unseen image variant) and general VQA; ROUGE-L, Fact and Meaningful scores,
    understanding accuracy, refusal and leak rates; forget quality vs an oracle; attacks. An unlearning run is
    scored on the groups its manifest records (its request, a chain's earlier requests) unless others are named."""
    from smfa.eval.pipeline import EvalConfig
    from smfa.stages.evaluate import evaluate_run

    names = ["bench", "model", "out", "forget", "forget_people", "target", "limit", "judge", "judge_base_url", "judge_model",
             "questions", "oracle", "vanilla", "attacks", *RELEARN_OPTIONS, "batch_size", "trust_remote_code", "overwrite",
             "device", "dtype"]
    return run_stage(EvalConfig, evaluate_run, args.config, overrides(args, names),
                         "evaluation written to {out} (metrics.json, generations.jsonl, report.md)")


def _add_eval(sub: Any) -> None:
    p = command(sub, "eval", _eval)
    _bench_model_out(p, "bench directory", "run directory (finetune/unlearn), model directory, or hf:ORG/NAME (hub)",
                     "evaluation directory to write")
    p.add_argument("--forget", help=f"forget split (default: an unlearning run's own group, else 10); {FORGET_HELP}")
    p.add_argument("--forget-people", dest="forget_people", metavar="IDS",
                   help="these people are the forget group instead of a split (comma list or a file, one id per line)")
    p.add_argument("--target", choices=TARGETS, help="all (default) or visual: forget people's text memory counts as retain")
    p.add_argument("--limit", type=int, help="at most N questions per set")
    p.add_argument("--questions", help="extra probe questions, JSONL in the bench row format (image optional)")
    p.add_argument("--judge", choices=available_judges(), help="offline (default, deterministic) or an OpenAI-compatible endpoint")
    p.add_argument("--judge-base-url", dest="judge_base_url", help="judge endpoint (else $SMFA_JUDGE_BASE_URL); key only from $SMFA_JUDGE_API_KEY")
    p.add_argument("--judge-model", dest="judge_model", help="judge model (else $SMFA_JUDGE_MODEL)")
    p.add_argument("--oracle", help="oracle run (retain-only): adds forget quality (KS test p-value) and, with the mia "
                                    "attack, PrivLeak")
    p.add_argument("--vanilla", help="vanilla run: its forget quality as a reference point")
    add_attack_options(p, "'all' or a comma list: paraphrase,unseen_image,cross_modal,prompt,relearn,quantize,mia; "
                          "relearn_sweep (the relearn grid with repair, minutes) only by name, e.g. all,relearn_sweep")
    p.add_argument("--batch-size", type=int, dest="batch_size")
    add_placement_options(p)
    p.add_argument("--trust-remote-code", action="store_true", default=None, dest="trust_remote_code")
    p.add_argument("--overwrite", action="store_true", default=None)
    p.add_argument("--config", help="YAML recipe with EvalConfig fields")


# ---- sculpt (k sweep) -----------------------------------------------------------------------------
def _floats(text: str) -> tuple[float, ...]:
    from smfa.errors import ConfigError

    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise ConfigError(f"--k expects comma-separated numbers, got {text!r}") from exc


def _sculpt(args: argparse.Namespace) -> int:
    """re-sculpt an SMFA run's saved adapters for several k without retraining; trade-off curve

    Re-sculpt adapters/forget against adapters/anchor of an SMFA run for each k, merge, evaluate, and write the
    trade-off table (sweep.md) and curve (k_sweep.png). No training."""
    from smfa.stages.sweep import SweepConfig, merge_to_checkpoint, sculpt_sweep

    if args.merge_to:
        from smfa.errors import ConfigError

        ks = _floats(args.k) if args.k else (None,)  # None: the run's own k (and mode), from its manifest
        if len(ks) != 1:
            raise ConfigError("--merge-to writes one checkpoint: give exactly one --k")
        if args.device or args.dtype:
            raise ConfigError("--merge-to sculpts on the CPU, shard by shard, in the checkpoint's own dtype: "
                              "--device/--dtype apply to the k sweep only")
        out = merge_to_checkpoint(args.run, ks[0], args.mode, args.merge_to, bool(args.overwrite))
        print(f"sculpted checkpoint written to {out} (out of core)")
        return 0
    over = {"run": args.run, "ks": _floats(args.k) if args.k else None, "mode": args.mode, "out": args.out,
            "limit": args.limit, "judge": args.judge, "overwrite": args.overwrite,
            "core_sets": False if args.all_sets else None, "device": args.device, "dtype": args.dtype}
    return run_stage(SweepConfig, sculpt_sweep, None, over, "k sweep written to {out} (sweep.md, k_sweep.png)")


def _add_sculpt(sub: Any) -> None:
    p = command(sub, "sculpt", _sculpt)
    p.add_argument("run", help="an SMFA unlearn run directory")
    p.add_argument("--k", help="comma-separated k values (default 0,0.5,1,2,5,10,20)")
    p.add_argument("--mode", choices=MODES, help="mask (default both)")
    p.add_argument("--out", help="output directory (default RUN/sweep-MODE)")
    p.add_argument("--merge-to", dest="merge_to", help="instead of a sweep: sculpt with one --k into the vanilla "
                   "checkpoint on disk, shard by shard (out of core), writing a new checkpoint here; "
                   "--k and --mode default to the run's own")
    p.add_argument("--limit", type=int, help="questions per evaluation set (default 200)")
    p.add_argument("--judge", choices=available_judges())
    p.add_argument("--all-sets", dest="all_sets", action="store_true",
                   help="evaluate every set at every k (default: train-phrasing sets, the forget people's name memory and "
                        "general VQA, the curve's points)")
    add_placement_options(p)
    p.add_argument("--overwrite", action="store_true", default=None)


# ---- compare ----------------------------------------------------------------------------------------
def _compare(args: argparse.Namespace) -> int:
    """run every method at every forget ratio and write one comparison table with plots (resumable)

    Unlearn with each method at each forget ratio from the same vanilla run, evaluate with the same code, and
    write the paper's main table (+ leak rates, forget quality, wall time) and plots. Finished cells are not
    recomputed; one computed with another config is refused (--overwrite redoes it)."""
    from smfa.stages.compare import CompareConfig, compare

    over = overrides(args, ["bench", "model", "out", "oracle", "target", "eval_limit", "judge", "seed", "reference",
                            "device", "dtype", "overwrite"])
    over.update(methods=_names(args.methods), forget=_names(args.forget))
    return run_stage(CompareConfig, compare, args.config, over, "comparison written to {out}/report.md")


def _names(text: str | None) -> tuple[str, ...] | None:
    """A comma list option (``--methods``, ``--forget``) as a tuple; None when not given."""
    return tuple(x.strip() for x in text.split(",")) if text else None


def _add_compare(sub: Any) -> None:
    p = command(sub, "compare", _compare)
    p.add_argument("--bench", help="bench directory")
    p.add_argument("--model", help="vanilla run")
    p.add_argument("--oracle", help="oracles for forget quality, one per ratio: 'F=RUN,F=RUN' (each trained with "
                   "--people retain --forget F), or 'train' to train them here with the vanilla's recipe")
    p.add_argument("--forget", help="comma list of forget splits (default 5,10,15)")
    p.add_argument("--methods", help="comma list (default smfa,idk,ga_diff,kl_min,npo,mmunlearner,ties,ga); NAME@BUDGET "
                   "runs a method with its own data budget, e.g. smfa@none (the paper recipe) beside smfa")
    p.add_argument("--reference", choices=REFERENCE_BUDGETS, help="data budget of every method (default auto; none = the paper recipe; see smfa unlearn --help)")
    p.add_argument("--target", choices=TARGETS)
    p.add_argument("--out", help="comparison directory")
    p.add_argument("--eval-limit", type=int, dest="eval_limit")
    p.add_argument("--judge", choices=available_judges())
    p.add_argument("--seed", type=int)
    add_placement_options(p)
    p.add_argument("--overwrite", action="store_true", default=None,
                   help="redo the finished cells computed with another config (without it they are refused)")
    p.add_argument("--config", help="YAML recipe with CompareConfig fields (per-method params: {method: {k: v}})")


def register(sub: Any) -> None:
    _add_finetune(sub)
    _add_eval(sub)
    _add_unlearn(sub)
    _add_sculpt(sub)
    _add_compare(sub)
