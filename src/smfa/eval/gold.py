"""Gold standard and membership inference from per-question answer losses.

* :func:`forget_quality` — a KS test on answer NLL: the p-value of a two-sample Kolmogorov-Smirnov test
  between the unlearned model's and the oracle's (trained on retain only) per-question answer NLL (mean
  per-token loss of the reference answer) on the forget questions. High p (near 1): the two NLL
  distributions cannot be told apart, i.e. the model behaves as if it never saw the forget people; low p:
  it still differs (usually: still remembers). TOFU's and OpenUnlearning's "forget quality" runs the same
  test on the truth-ratio distribution (paraphrased vs perturbed answers), so the numbers do not compare.
* :func:`mia_auc` — loss-based membership inference: the AUC of "lower loss ⇒ member" for separating
  members (e.g. forget people, who were trained on) from non-members (people never trained on). 0.5 =
  indistinguishable (the ideal after unlearning), 1.0 = members have the lowest losses (remembered).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from scipy.stats import ks_2samp, rankdata

from smfa.eval.schema import EvalError, GoldStandard

__all__ = ["GoldStandard", "forget_quality", "gold_standard", "mia_auc"]


def _losses(values: Iterable[float | None], what: str) -> list[float]:
    raw = list(values)
    if any(v is None for v in raw):
        raise EvalError(f"{what} has {sum(v is None for v in raw)} missing loss(es): compute answer losses for every question")
    out = [float(v) for v in raw]  # type: ignore[arg-type]
    if not out:
        raise EvalError(f"{what} is empty: need at least one per-question loss")
    bad = [v for v in out if not math.isfinite(v)]
    if bad:
        raise EvalError(f"{what} has {len(bad)} non-finite loss(es) (e.g. {bad[0]}); the model diverged or losses were not computed")
    return out


def forget_quality(unlearned_losses: Sequence[float], oracle_losses: Sequence[float]) -> float:
    """KS-test p-value between the unlearned model's and the oracle's per-question answer NLL (not TOFU's
    truth-ratio forget quality; see the module docstring)."""
    a = _losses(unlearned_losses, "unlearned_losses")
    b = _losses(oracle_losses, "oracle_losses")
    return float(ks_2samp(a, b).pvalue)


def mia_auc(member_losses: Sequence[float], nonmember_losses: Sequence[float]) -> float:
    """AUC that a lower loss marks a member: P(member loss < non-member loss) + ½ P(tie), by ranks
    (Mann-Whitney U / (n_m · n_n)); 0.5 = indistinguishable."""
    members = _losses(member_losses, "member_losses")
    others = _losses(nonmember_losses, "nonmember_losses")
    # Rank by negated loss so a member's rank counts the non-members it beats (lower loss ⇒ higher score).
    ranks = rankdata([-v for v in members + others])
    n_m, n_n = len(members), len(others)
    u = float(sum(ranks[:n_m])) - n_m * (n_m + 1) / 2
    return u / (n_m * n_n)


def gold_standard(
    unlearned_losses: Sequence[float],
    oracle_losses: Sequence[float],
    vanilla_losses: Sequence[float] | None = None,
    *,
    oracle: str = "",
    sets: Sequence[str] = (),
) -> GoldStandard:
    """The answer-NLL KS test of the unlearned model (and of the vanilla, if its losses are given) against the oracle."""
    return GoldStandard(
        forget_quality=forget_quality(unlearned_losses, oracle_losses),
        vanilla_forget_quality=None if vanilla_losses is None else forget_quality(vanilla_losses, oracle_losses),
        n=len(unlearned_losses),
        oracle=oracle,
        sets=list(sets),
    )
