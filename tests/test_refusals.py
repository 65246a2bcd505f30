"""The refusal pool: size, distinctness, grammar, detection by the evaluation's is_refusal, and deterministic
sampling."""

from __future__ import annotations

import random
import re

import pytest

from smfa.eval.text import is_refusal
from smfa.refusals import (
    MAX_WORDS,
    MIN_WORDS,
    WORD_PATTERN,
    refusal_key,
    refusal_pool,
    refusal_vocabulary,
    sample_refusal,
)

POOL = refusal_pool()
# The only words capitalised inside a sentence.
PRONOUN_I = {"I", "I'm", "I'd", "I've"}


def test_pool_has_at_least_1000_distinct_refusals_after_normalisation():
    plain = {re.sub(r"\s+", " ", re.sub(r"[^\w\s']", "", r.lower())).strip() for r in POOL}
    assert len(POOL) == len(set(POOL))
    assert len(plain) == len(POOL)
    assert len(POOL) >= 1000


def test_no_near_duplicates():
    keys = [refusal_key(r) for r in POOL]
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("I can't say that.", "I cannot say that"),
        ("Sorry, I don't know.", "sorry i do not know"),
        ("I can't share that information.", "I can't share that information, though."),
        ("I have no idea.", "I have no idea really!"),
        ("I\u2019m not sure.", "I'm  not sure."),
    ],
)
def test_refusal_key_merges_case_punctuation_contractions_and_trailing_fillers(a, b):
    assert refusal_key(a) == refusal_key(b)


def test_refusal_key_keeps_different_refusals_apart():
    assert refusal_key("I don't know who this is.") != refusal_key("I don't know.")
    assert refusal_key("I have no information about this person.") != refusal_key("I have no information.")


def test_pool_order_is_deterministic():
    refusal_pool.cache_clear()
    try:
        assert refusal_pool() == POOL
    finally:
        refusal_pool.cache_clear()
    assert refusal_pool() == POOL


def test_every_refusal_is_grammatical():
    bad = []
    for refusal in POOL:
        try:
            _check_grammar(refusal)
        except AssertionError as exc:
            bad.append(f"{refusal!r}: {exc}")
    assert not bad, "\n".join(bad[:20])


def _check_grammar(refusal: str) -> None:
    assert refusal == refusal.strip(), "surrounding whitespace"
    assert "  " not in refusal, "double space"
    assert refusal[0].isupper(), "must start with a capital"
    assert refusal[-1] in ".!", "must end with . or !"
    assert refusal[-2].isalpha(), "no punctuation before the final mark"
    assert not re.search(r"[,.!?;:]\s*[,.!?;:]", refusal), "doubled punctuation"
    assert not re.search(r"\s[,.!?]", refusal), "space before punctuation"
    assert not re.search(r"[,.!?](?=\S)", refusal[:-1]), "no space after punctuation"
    assert set(refusal) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ ',.!"), "odd character"
    words = refusal.split()
    assert MIN_WORDS <= len(words) <= MAX_WORDS, f"{len(words)} words"
    bare = [w.strip(",.!").lower() for w in words]
    assert all(a != b for a, b in zip(bare, bare[1:])), "doubled word"
    assert bare.count("sorry") + bare.count("apologies") <= 1, "apologises twice"
    assert sum(w in {"unfortunately", "regrettably", "honestly", "honest"} for w in bare) <= 1, "two openers"
    # After an opener ("Sorry,") or anywhere inside the sentence, only "I" and its contractions are capitalised.
    for word in words[1:]:
        assert word in PRONOUN_I or word[0].islower(), f"capital inside the sentence: {word!r}"
    # Only one sentence: the final mark is the only sentence-ending punctuation.
    assert not re.search(r"[.!?]", refusal[:-1]), "more than one sentence"


def test_every_refusal_is_detected():
    missed = [r for r in POOL if not is_refusal(r)]
    assert not missed, missed[:10]


@pytest.mark.parametrize(
    "answer",
    [
        "This person lives in Norvale.",
        "The shirt is red.",
        "There are three circles.",
        "Alda Venmark works as a pharmacist at Brightwell Labs.",
        "She was born in 1984.",
        "The optic disc is on the left side.",
        "He has brown hair and wears glasses.",
        "Two yellow lesions.",
        "",
    ],
)
def test_ordinary_answers_are_not_refusals(answer):
    assert not is_refusal(answer)


@pytest.mark.parametrize(
    "text",
    [
        "I DON'T KNOW",
        "i dont know who that is",
        "I can\u2019t say.",
        "I cannot help with that",
        "I am unable to answer.",
        "No information is available.",
        "I'd rather not.",
        "I won't tell.",
    ],
)
def test_detector_handles_case_apostrophes_and_spelling(text):
    assert is_refusal(text)


def test_sampling_is_deterministic_given_the_seed():
    first = [sample_refusal(random.Random(7)) for _ in range(3)]
    assert len(set(first)) == 1
    rng_a, rng_b = random.Random(123), random.Random(123)
    draws_a = [sample_refusal(rng_a) for _ in range(200)]
    draws_b = [sample_refusal(rng_b) for _ in range(200)]
    assert draws_a == draws_b
    assert set(draws_a) <= set(POOL)
    # Drawn from the whole pool, not a handful of strings: 200 draws from >1,000 are nearly all distinct.
    assert len(set(draws_a)) > 180
    assert draws_a != [sample_refusal(random.Random(124)) for _ in range(200)]


def test_vocabulary_covers_every_word_of_the_pool():
    vocabulary = refusal_vocabulary()
    for refusal in POOL:
        assert set(WORD_PATTERN.findall(refusal)) <= vocabulary
        # Outside the words, only "," "." "!" and spaces remain.
        assert set(WORD_PATTERN.sub("", refusal)) <= {",", ".", "!", " "}
    assert {"I", "don't", "know", "sorry", "Sorry"} <= vocabulary
    # Small enough for the tiny word-level model.
    assert len(vocabulary) < 300
    vocabulary.add("extra")
    assert "extra" not in refusal_vocabulary()
