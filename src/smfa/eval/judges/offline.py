"""The ``offline`` judge: a deterministic rubric, as small pure functions (no network).

``offline`` (the default; deterministic, no network)
====================================================

Fact Score — how much of the key fact the answer states:

* the fact is contained in the answer (normalised, whole words, digits = number words): **10**, refusal
  or not (a refusal that states the fact still leaks it);
* a refusal without the fact: **0-1** — the share of the fact's words it mentions (e.g. the surname);
* any other answer: partial credit **0-9** = ``7 × fact recall + 2 × reference F1``, where *fact recall* is
  the share of the fact's content words found in the answer ("Alda Brennmark" for "Alda Venmark": 0.5)
  and *reference F1* is the word F1 between answer and reference after dropping stop words and the
  question's own words (so repeating the question earns nothing); capped at 9, since only the full fact
  earns 10. A wrong one-word fact therefore gets at most about 2;
* the fact is empty (the correct answer is a refusal, e.g. unanswerable questions): **10** for a refusal,
  **0** for any answer that invents one;
* an empty answer: **0**.

Meaningful Score — is the output well-formed language, whatever its correctness (a polite refusal is
meaningful, "is is is is" is not). Start at 10 and:

* empty (nothing but whitespace, punctuation or special tokens): **0**;
* non-words: each token counts 1 if it is a special token (``<unk>``, ``[UNK]``, ``</s>``, ``<|...|>``),
  a subword marker or junk character (``##``, ``▁``, ``Ġ``, ``�``, control characters), a letter-digit
  jumble ("x7qz"), or an unknown word that does not look like a word (no vowel, 4+ consonants in a row,
  a letter tripled); 0.5 if it is an unknown but pronounceable lower-case word; 0 for words of the
  built-in English lexicon (with plural/verb suffixes), the bench vocabulary (:mod:`smfa.bench.vocab`, the
  refusal pool), the words of the question, reference and fact, any ``vocabulary`` passed to the judge,
  numbers, and capitalised pronounceable words (proper names). Score −= 15 × non-word share (all junk → 0);
* degeneration: the same token 3+ times in a row, at most half the tokens distinct (4+ tokens), or 30 %+
  of the word trigrams repeated (6+ tokens) → capped at **2**;
* word salad: 6+ tokens with no function word ("the", "is", "in", ...) and no list punctuation → −3;
* truncation: no sentence end after 12+ tokens → −1; ending on a dangling function word ("lives in the")
  → −1; ending mid-word (an unknown last token with no final punctuation) → −1;
* clipped to [0, 10]. A correct short answer ("Norvale.", "This person lives in Norvale.") scores 10; a
  well-formed refusal scores 10; real-word salad that is neither repetitive nor junk is only caught by an
  LLM judge.

The built-in English lexicon is the data file ``english_words.txt`` next to this module (one word a line).
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterable, Sequence
from functools import lru_cache
from importlib import resources
from typing import Any

from smfa.eval.judges.base import Judge, Scores, register_judge
from smfa.eval.text import POLAR_FACTS, SPECIAL_TOKEN_PATTERN, is_refusal, normalize, states_fact

# ---------------------------------------------------------------------------------------------------------
# Offline judge: the rubric of the module docstring, as small pure functions.

_STOPWORDS = frozenset(
    """a an the this that these those is are was were be been being am do does did has have had of in on at
    to for from by with about as into onto over under and or but not no yes it its it's they them their
    he him his she her hers i me my we our you your what which who whom whose where when why how there
    here than then so such very can could would should will may might must shall""".split()
)
# Words a sentence cannot end on (a cut-off answer: "This person lives in the").
_DANGLING = frozenset(
    "a an the of in on at to for from by with about as into and or but is are was were be has have had "
    "this that these their his her its my our your very".split()
)
_TERMINAL = (".", "!", "?", '"', "'", ")", "\u201d", "\u2019")
_ORDINARY_PUNCT = set(".,;:!?'\"()[]{}-\u2013\u2014/&%$\u20ac\u00a3+*=\u2019\u2018\u201c\u201d\u2026")
_TOKEN = re.compile(
    r"<\|[^<>|\s]{1,40}\|>|</?[A-Za-z_]{1,12}>|\[[A-Z_]{2,12}\]"  # special tokens, one token each
    r"|##\w*"  # wordpiece continuation pieces
    r"|[^\W\d_]+(?:['\u2019][^\W\d_]+)*"  # words, with inner apostrophes
    r"|\d+(?:[.,]\d+)*(?:st|nd|rd|th|s|k|m|%)?(?![^\W\d_])"  # numbers: 1984, 3.5, 2nd, 40k
    r"|\w+"  # letter/digit jumbles: x7qz
    r"|\S"  # any other character
)
_VOWELS = set("aeiouy\u00e0\u00e1\u00e2\u00e4\u00e8\u00e9\u00ea\u00eb\u00ec\u00ed\u00ee\u00ef\u00f2\u00f3\u00f4\u00f6\u00f9\u00fa\u00fb\u00fc")
_CONSONANT_RUN = re.compile(r"[^aeiouy\W\d_]{4,}")
_TRIPLE = re.compile(r"(\w)\1\1")
_SUFFIXES = ("'s", "\u2019s", "ies", "ied", "ing", "ed", "es", "s", "ly", "er", "ers", "est", "d")


def _word_set(*texts: str) -> set[str]:
    return {w for t in texts for w in normalize(t).split()}


@lru_cache(maxsize=1)
def bench_lexicon() -> frozenset[str]:
    """The built-in English word list, the bench's value pools and the refusal pool's words, lower case."""
    from smfa.bench import vocab
    from smfa.refusals import refusal_vocabulary

    words = set(resources.files(__package__).joinpath("english_words.txt").read_text(encoding="utf-8").split())
    for value in vars(vocab).values():
        items: Iterable[Any] = ()
        if isinstance(value, (tuple, list, frozenset, set)):
            items = value
        elif isinstance(value, dict):
            items = [*value.keys(), *value.values()]
        for item in items:
            if isinstance(item, str):
                words.update(normalize(item).split())
    for word in refusal_vocabulary():
        words.update(normalize(word).split())
    return frozenset(words)


class _Lexicon:
    """Membership in any of several word sets: an answer's lexicon without copying the large built-in one
    (a union per answer cost ~2 ms, most of the offline judge's time)."""

    __slots__ = ("sets",)

    def __init__(self, *sets: Container[str]) -> None:
        self.sets = sets

    def __contains__(self, word: object) -> bool:
        return any(word in s for s in self.sets)


@lru_cache(maxsize=16)
def _normalized_words(words: frozenset[str]) -> frozenset[str]:
    """``normalize`` of every word, once per word set (the judge passes the same vocabulary for every answer)."""
    return frozenset(normalize(v) for v in words)


def _known(word: str, lexicon: Container[str]) -> bool:
    w = word.lower()
    if w in lexicon:
        return True
    for suffix in _SUFFIXES:
        if w.endswith(suffix) and len(w) - len(suffix) >= 2:
            stem = w[: -len(suffix)]
            if stem in lexicon or stem + "e" in lexicon or (suffix in ("ies", "ied") and stem + "y" in lexicon):
                return True
            if len(stem) >= 3 and stem[-1] == stem[-2] and stem[:-1] in lexicon:  # "stopped", "running"
                return True
    parts = re.split(r"['\u2019]", w)
    return len(parts) > 1 and all(p in lexicon or p in ("s", "t", "d", "ll", "ve", "re", "m") for p in parts)


def _pronounceable(word: str) -> bool:
    w = word.lower()
    return (
        1 < len(w) <= 20
        and any(c in _VOWELS for c in w)
        and not _CONSONANT_RUN.search(w)
        and not _TRIPLE.search(w)
    )


def _nonword_weight(token: str, lexicon: Container[str]) -> float:
    """1 = certainly not a word, 0.5 = unknown but word-like, 0 = a word, number or proper name."""
    if SPECIAL_TOKEN_PATTERN.fullmatch(token) or token.startswith("##"):
        return 1.0
    if re.fullmatch(r"\d+(?:[.,]\d+)*(?:st|nd|rd|th|s|k|m|%)?", token):
        return 0.0
    if re.fullmatch(r"[^\W\d_]+(?:['\u2019][^\W\d_]+)*", token):
        if _known(token, lexicon):
            return 0.0
        if len(token) == 1:
            return 1.0  # a stray letter ("a" and "i" are in the lexicon)
        if not _pronounceable(token):
            return 1.0
        proper = token[0].isupper() and (token[1:].islower() or "'" in token or "\u2019" in token)
        return 0.0 if proper else 0.5
    return 1.0  # letter-digit jumbles, junk characters


def _tokens(answer: str) -> list[str]:
    """Word-ish tokens of ``answer``; ordinary punctuation is dropped, junk characters are kept."""
    return [t for t in _TOKEN.findall(answer) if not (len(t) == 1 and t in _ORDINARY_PUNCT)]


def is_degenerate(tokens: Sequence[str]) -> bool:
    """Repetition: a token 3+ times in a row, ≤ half the tokens distinct (4+ tokens), or ≥ 30 % of the
    trigrams repeated (6+ tokens)."""
    low = [t.lower() for t in tokens]
    run = 1
    for prev, cur in zip(low, low[1:]):
        run = run + 1 if cur == prev else 1
        if run >= 3:
            return True
    if len(low) >= 4 and len(set(low)) <= len(low) / 2:
        return True
    if len(low) >= 6:
        trigrams = list(zip(low, low[1:], low[2:]))
        counts: dict[tuple[str, str, str], int] = {}
        for g in trigrams:
            counts[g] = counts.get(g, 0) + 1
        repeated = sum(c for c in counts.values() if c > 1)
        if repeated / len(trigrams) >= 0.3:
            return True
    return False


def offline_meaningful_score(
    answer: str,
    question: str = "",
    reference: str = "",
    fact: str = "",
    vocabulary: Iterable[str] = (),
) -> float:
    """Meaningful Score 0-10 by the offline rubric (module docstring)."""
    tokens = _tokens(answer)
    if not tokens or all(SPECIAL_TOKEN_PATTERN.fullmatch(t) for t in tokens):
        return 0.0
    vocab = _normalized_words(vocabulary if isinstance(vocabulary, frozenset) else frozenset(vocabulary))
    lexicon = _Lexicon(bench_lexicon(), _word_set(question, reference, fact), vocab)
    weights = [_nonword_weight(t, lexicon) for t in tokens]
    score = 10.0 - 15.0 * sum(weights) / len(tokens)
    if is_degenerate(tokens):
        score = min(score, 2.0)
    words = [t.lower() for t in tokens]
    if len(tokens) >= 6 and not any(w in _STOPWORDS for w in words) and not re.search(r"[,;:\u2022]", answer):
        score -= 3.0  # word salad
    stripped = answer.rstrip()
    ended = stripped.endswith(_TERMINAL)
    if not ended:
        if len(tokens) >= 12:
            score -= 1.0
        if words[-1] in _DANGLING and len(tokens) >= 3:
            score -= 1.0
        if weights[-1] > 0 and stripped[-1:].isalnum():
            score -= 1.0  # cut off mid-word
    return round(min(10.0, max(0.0, score)), 2)


def offline_fact_score(answer: str, fact: str, reference: str = "", question: str = "") -> float:
    """Fact Score 0-10 by the offline rubric (module docstring)."""
    if not normalize(answer):
        return 0.0
    if not normalize(fact):
        return 10.0 if is_refusal(answer) else 0.0
    if states_fact(answer, fact):
        return 10.0
    if normalize(fact) in POLAR_FACTS:
        return 0.0  # a yes/no fact is given or not: a refusal or "no no no" earns nothing
    answer_words = set(normalize(answer).split())
    fact_words = [w for w in normalize(fact).split() if w not in _STOPWORDS] or normalize(fact).split()
    recall = sum(w in answer_words for w in fact_words) / len(fact_words)
    if is_refusal(answer):
        return round(recall, 2)
    asked = _word_set(question) | _STOPWORDS
    got = answer_words - asked
    want = _word_set(reference) - asked
    common = len(got & want)
    f1 = 0.0 if not common else 2 * common / (len(got) + len(want))
    return round(min(9.0, 7.0 * recall + 2.0 * f1), 2)


@register_judge("offline")
class OfflineJudge(Judge):
    """Deterministic rubric judge (module docstring). ``vocabulary``: extra words to accept as words in the
    Meaningful check (e.g. every word of the bench's questions and answers)."""

    def __init__(self, vocabulary: Iterable[str] = ()) -> None:
        self.vocabulary = frozenset(normalize(v) for v in vocabulary)

    def score(self, question: str, answer: str, reference: str, fact: str, kind: str) -> Scores:
        return (
            offline_fact_score(answer, fact, reference, question),
            offline_meaningful_score(answer, question, reference, fact, self.vocabulary),
        )
