"""Does an unlearned model still leak a request's people? The check ``smfa unlearn`` and ``smfa forget`` run
after training (:func:`check_request`), before they report success: the leak of the people's memory questions
asked with their photo and by name in training phrasing and — where the data has them — in held-out phrasings,
each against one target rate. The leak on held-out photos is measured and reported beside them, and a run above
the target there says so, but it does not fail the check: no recipe of this release reaches it (the default
SMFA leaks 20–33 % on unseen photos of the tiny bench; docs/budget.md), and a check every request fails would
only triple the cost of each."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from smfa.bench.schema import FORGET_GROUP, forgotten_kinds

# A request's leaks (keys of smfa.eval.schema.Overall) under the names its records use (the check here, the
# audit record's "leak": smfa.stages.audit.leak_record), and how messages say them.
LEAK_KEYS = {"photo": "forget_leak_image", "name": "forget_leak_text", "paraphrase": "forget_leak_paraphrase",
             "unseen_photo": "forget_leak_unseen_image"}
LEAK_LABELS = {"photo": "photo", "name": "name", "paraphrase": "held-out phrasing", "unseen_photo": "unseen photo"}
# The leaks that decide whether the check passes (the others are reported, and warned about above the target).
GATED = ("photo", "name", "paraphrase")


@dataclass
class RequestCheck:
    """The leak of one request's people (rates 0-1; None where the data has no such question) against
    ``target``; ``n``: memory questions behind the rates."""

    leak: dict[str, float | None]
    target: float
    n: int

    @property
    def above(self) -> dict[str, float]:
        """Every measured leak above the target."""
        return {name: rate for name, rate in self.leak.items() if rate is not None and rate > self.target}

    @property
    def failing(self) -> dict[str, float]:
        """The :data:`GATED` leaks above the target."""
        return {name: rate for name, rate in self.above.items() if name in GATED}

    @property
    def passed(self) -> bool:
        return not self.failing

    def summary(self) -> str:
        """``photo 25.0 %, name 0.0 %, held-out phrasing –, unseen photo – (n 8; target ≤ 5 %)``."""
        rates = ", ".join(f"{LEAK_LABELS[name]} {'–' if r is None else f'{100 * r:.1f} %'}" for name, r in self.leak.items())
        return f"{rates} (n {self.n}; target ≤ {100 * self.target:g} % on {', '.join(LEAK_LABELS[g] for g in GATED)})"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def request_sets(bench: Any, cfg: Any, group: Any) -> dict[str, list[Any]]:
    """The forget memory sets of ``group``'s own people in setting ``cfg.target`` (training phrasing,
    held-out phrasing, held-out photo), at most ``cfg.limit`` questions each."""
    kinds = forgotten_kinds(cfg.target)
    return {name: rows for name, rows in bench.eval_sets(group, target=cfg.target, limit=cfg.limit).items()
            if name.startswith(f"{FORGET_GROUP}/") and name.split("/")[1] in kinds and rows}


def check_request(loaded: Any, bench: Any, cfg: Any, target: float) -> RequestCheck:
    """Generate ``loaded``'s answers to :func:`request_sets` (``cfg``: an :class:`smfa.eval.pipeline.EvalConfig`,
    whose decoding and limit it uses) and score their leak as the evaluation does (the offline judge's
    key-fact matching; the same metrics)."""
    from smfa.eval.judges import get_judge
    from smfa.eval.metrics import compute_all_sets, compute_overall
    from smfa.eval.pipeline import eval_group, generate_sets

    group = eval_group(bench, cfg)
    sets = request_sets(bench, cfg, group)
    gens = generate_sets(loaded, bench, sets, set(group.forgotten), cfg=cfg)
    overall = compute_overall(compute_all_sets(gens, get_judge("offline")), cfg.target)
    leak = {name: getattr(overall, key) for name, key in LEAK_KEYS.items()}
    return RequestCheck(leak=leak, target=target, n=len(gens))
