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
* :func:`min_k_score` — Min-K% Prob (Shi et al., arXiv 2310.16789): a question's score is the mean NLL of its
  answer's k % least likely tokens; :func:`mia_auc` reads it like a loss.
* :func:`privleak` — MUSE's PrivLeak (Shi et al., arXiv 2407.06460) in MUSE's and OpenUnlearning's orientation:
  the relative change of AUC' = 1 − AUC from the oracle to the model, in %; 0 = as the oracle, −100 = members
  perfectly told apart where the oracle is at chance (a model that remembers everything), > 0 = members stand out
  less than for the oracle (over-unlearning).

Orientation. :func:`mia_auc` is the AUC of the peers' own MIA code — OpenUnlearning scores forget rows 0 and holdout
rows 1 with the loss (or Min-K% score) as the score (``roc_auc_score``), i.e. P(member loss < non-member loss):
1 = remembered, 0.5 = chance. Both peers report PrivLeak on 1 − that AUC (MUSE's own convention, which OpenUnlearning
reproduces with ``1 - score`` and ``1 - ref``), hence the 1 − AUC in :func:`privleak`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from scipy.stats import ks_2samp, rankdata

from smfa.errors import ConfigError
from smfa.eval.schema import EvalError, GoldStandard

__all__ = ["GoldStandard", "forget_quality", "gold_standard", "mia_auc", "min_k_score", "privleak"]


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


def min_k_score(token_losses: Sequence[float], k: float = 0.2) -> float:
    """Min-K% Prob of one answer: the mean of the ⌊k · n⌋ largest of its n token NLLs (at least one), i.e.
    of its k % least likely tokens. Lower ⇒ more likely a member, as for the mean loss."""
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not 0 < k <= 1:
        raise ConfigError(f"the Min-K% share k must be a number in (0, 1], got {k!r}")
    losses = sorted(_losses(token_losses, "token_losses"), reverse=True)
    # 1e-9: 0.29 * 100 is 28.999999999999996 in floating point, not 29
    top = losses[:max(1, math.floor(len(losses) * k + 1e-9))]
    return sum(top) / len(top)


def privleak(auc_model: float, auc_oracle: float) -> float | None:
    """PrivLeak in %, as MUSE and OpenUnlearning compute it: ``(AUC'_model − AUC'_oracle) / AUC'_oracle · 100`` with
    ``AUC' = 1 − AUC`` (:func:`mia_auc`'s AUC, 1 = members remembered). 0 ideal (as the oracle); < 0: the model's
    members stand out more than the oracle's (under-unlearning; −100 when they are perfectly told apart); > 0: less
    (over-unlearning). ``None`` when the oracle's AUC is 1 (AUC'_oracle 0: the ratio is undefined)."""
    for name, auc in (("auc_model", auc_model), ("auc_oracle", auc_oracle)):
        if isinstance(auc, bool) or not isinstance(auc, (int, float)) or not 0.0 <= auc <= 1.0:
            raise EvalError(f"{name} must be an AUC in [0, 1], got {auc!r}")
    model, oracle = 1.0 - auc_model, 1.0 - auc_oracle
    return None if oracle == 0 else (model - oracle) / oracle * 100


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
