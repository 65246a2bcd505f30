"""The refusal pool shipped with the package (generation only; refusals are detected by
:func:`smfa.eval.text.is_refusal`).

SMFA's forget-set targets (``D_f^idk``) replace every forget answer by a refusal drawn at random from a
pool of at least 1,000 distinct refusals (the paper's size), so the model learns "refuse" rather than one
memorised string. The pool is composed from families of parts, each family listing only openers,
cores and complements that read naturally together::

    opener ("I'm sorry," / "Unfortunately," / "")  +  core ("I can't share")  +  complement (" that information")

The composition is deterministic (fixed order, no randomness), every sentence is one short clause
(:data:`MIN_WORDS`–:data:`MAX_WORDS` words, ending in "."), and near-duplicates are dropped (see
:func:`refusal_key`). The evaluation's :func:`smfa.eval.text.is_refusal` recognises every refusal of the
pool; the test suite checks it.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import lru_cache

# Words per refusal (whitespace-separated): short enough for the tiny word-level model to learn.
MIN_WORDS = 4
MAX_WORDS = 16

# Openers. "Unfortunately" / "Regrettably" / "I'm afraid" express inability, which reads oddly before an
# unwillingness core ("Unfortunately, I'd rather not say"), so declining families use the second set.
_OPENERS_INABILITY = (
    "",
    "Sorry,",
    "I'm sorry,",
    "Sorry, but",
    "I'm sorry, but",
    "Unfortunately,",
    "I'm afraid",
    "Regrettably,",
    "Apologies, but",
    "My apologies, but",
    "Honestly,",
    "To be honest,",
)
_OPENERS_DECLINE = (
    "",
    "Sorry,",
    "I'm sorry,",
    "Sorry, but",
    "I'm sorry, but",
    "Apologies, but",
    "My apologies, but",
    "Honestly,",
    "To be honest,",
)
# "Regrettably, I'm not sure" and "I'm afraid I'm not sure" are stilted; uncertainty takes the plain ones.
_OPENERS_UNCERTAIN = ("", "Sorry,", "I'm sorry,", "Sorry, but", "I'm sorry, but", "Honestly,", "To be honest,")


@dataclass(frozen=True)
class _Family:
    """Cores that share a grammatical frame, with the openers and complements that fit every one of them."""

    openers: tuple[str, ...]
    cores: tuple[str, ...]
    complements: tuple[str, ...]  # appended to the core as written ("" = the bare core)


_PERSONAL_OBJECTS = (
    " that",
    " that information",
    " this information",
    " those details",
    " these details",
    " personal details",
    " private details",
    " personal information",
    " private information",
    " any details about this person",
    " anything about this person",
    " information about this person",
    " details about this person",
    " personal information about this person",
    " anything about them",
    " that kind of information",
    " their personal details",
    " their private information",
)
_QUESTION_OBJECTS = (
    " that",
    " that question",
    " this question",
    " questions about this person",
    " questions about them",
    " questions like that",
    " that kind of question",
)
_DISCUSS_OBJECTS = (
    " that",
    " this person",
    " this person's private life",
    " personal details",
    " that topic",
    " private matters",
    " that information",
    " anyone's private information",
)
_TELL_OBJECTS = (
    " that",
    " the answer",
    " who this is",
    " anything about this person",
    " anything about them",
    " that information",
    " those details",
)

_FAMILIES: tuple[_Family, ...] = (
    _Family(
        _OPENERS_INABILITY,
        ("I don't know", "I really don't know", "I can't recall", "I don't recall", "I can't remember",
         "I don't remember"),
        ("", " the answer", " the answer to that", " anything about that", " anything about this person",
         " anything about them", " much about this person", " who this is", " who this person is",
         " the details", " those details"),
    ),
    _Family(
        _OPENERS_UNCERTAIN,
        ("I'm not sure", "I'm really not sure", "I'm not certain"),
        ("", " about that", " about this person", " who this is", " who this person is", " of the answer"),
    ),
    _Family(
        _OPENERS_INABILITY,
        ("I have no idea",),
        ("", " who this is", " who this person is", " about that", " about this person"),
    ),
    _Family(
        _OPENERS_INABILITY,
        ("I can't say", "I'm not able to say", "I'm unable to say", "I'm not in a position to say"),
        ("", " who this is", " anything about this person", " anything about them", " much about this person",
         " for sure"),
    ),
    _Family(
        _OPENERS_DECLINE,
        ("I'd rather not say", "I'd prefer not to say"),
        ("", " who this is", " anything about this person", " anything about them", " much about this person"),
    ),
    _Family(
        _OPENERS_INABILITY,
        ("I can't tell you", "I'm not able to tell you", "I'm unable to tell you"),
        _TELL_OBJECTS + (" much about this person",),
    ),
    _Family(
        _OPENERS_DECLINE,
        ("I'd rather not tell you", "I'd prefer not to tell you"),
        _TELL_OBJECTS,
    ),
    _Family(
        _OPENERS_INABILITY,
        ("I can't share", "I'm not able to share", "I'm unable to share", "I'm not allowed to share",
         "I'm not in a position to share", "I can't disclose", "I'm not able to disclose",
         "I'm unable to disclose", "I'm not allowed to disclose", "I can't provide", "I'm not able to provide",
         "I'm unable to provide", "I can't reveal", "I'm unable to reveal", "I can't give out",
         "I'm not able to give out"),
        _PERSONAL_OBJECTS,
    ),
    _Family(
        _OPENERS_DECLINE,
        ("I'd rather not share", "I'd prefer not to share", "I won't share", "I'd rather not disclose",
         "I won't disclose", "I'd rather not reveal", "I won't reveal", "I'm not comfortable sharing",
         "I'm not comfortable disclosing"),
        _PERSONAL_OBJECTS,
    ),
    _Family(
        _OPENERS_INABILITY,
        ("I can't answer", "I'm not able to answer", "I'm unable to answer", "I'm not in a position to answer",
         "I'm not allowed to answer"),
        _QUESTION_OBJECTS,
    ),
    _Family(
        _OPENERS_DECLINE,
        ("I'd rather not answer", "I'd prefer not to answer", "I won't answer", "I must decline to answer"),
        _QUESTION_OBJECTS,
    ),
    _Family(
        _OPENERS_INABILITY,
        ("I can't help", "I'm not able to help", "I'm unable to help"),
        (" with that", " with this question", " with questions about this person", " with that request",
         " with that kind of question", " you with that"),
    ),
    _Family(
        _OPENERS_INABILITY,
        ("I can't discuss", "I'm not able to discuss", "I'm unable to discuss"),
        _DISCUSS_OBJECTS,
    ),
    _Family(
        _OPENERS_DECLINE,
        ("I'd rather not discuss", "I won't discuss", "I'm not comfortable discussing"),
        _DISCUSS_OBJECTS,
    ),
    _Family(
        _OPENERS_INABILITY,
        ("I can't comment", "I'm not in a position to comment"),
        ("", " on that", " on this person", " on them"),
    ),
    _Family(
        _OPENERS_DECLINE,
        ("I'd rather not comment",),
        ("", " on that", " on this person", " on them"),
    ),
    _Family(
        _OPENERS_INABILITY,
        ("I have no information", "I don't have any information", "I have no details",
         "I don't have any details", "I have no knowledge", "I don't have any knowledge"),
        ("", " about that", " about this person", " about them", " about this individual", " about who this is"),
    ),
    _Family(
        _OPENERS_INABILITY,
        ("I have no record", "I don't have any record", "I can't find any record"),
        ("", " of that", " of this person", " of them", " of this individual"),
    ),
    _Family(
        _OPENERS_INABILITY,
        ("I don't have that information", "I don't have those details", "I don't have the answer",
         "I don't have an answer"),
        ("", " for you", " about this person"),
    ),
    _Family(
        _OPENERS_INABILITY,
        ("That's not something I can share", "That's not something I know", "That isn't something I can discuss",
         "That's not something I'm able to share", "That's not information I can share"),
        ("", " about this person"),
    ),
    _Family(
        _OPENERS_INABILITY,
        ("That's not something I can answer", "That's not something I can help with",
         "That's not information I have", "That information isn't something I can share"),
        ("",),
    ),
)

# Near-duplicate normalisation: contractions are spelled out, so "I can't say" and "I cannot say"
# count as one refusal, and a trailing filler word does not make a new one.
_CONTRACTIONS = (
    (r"\bcan't\b", "cannot"),
    (r"\bwon't\b", "will not"),
    (r"\bi'm\b", "i am"),
    (r"\bi'd\b", "i would"),
    (r"\bi've\b", "i have"),
    (r"\bthat's\b", "that is"),
    (r"n't\b", " not"),
)
_TRAILING_FILLERS = frozenset(
    {"though", "really", "sorry", "anyway", "here", "now", "then", "honestly", "unfortunately", "either",
     "that", "this", "it", "please", "indeed", "actually", "yet", "too", "so"}
)

# Words of a refusal: letters with optional inner apostrophes ("don't", "person's").
WORD_PATTERN = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")

def _normalise_apostrophes(text: str) -> str:
    return text.replace("\u2019", "'").replace("\u2018", "'")


def _join(opener: str, core: str) -> str:
    """Join an opener and a core: after an opener the core continues the sentence in lower case,
    except the pronoun "I" and its contractions."""
    if not opener:
        return core
    if not (core.startswith("I ") or core.startswith("I'")):
        core = core[0].lower() + core[1:]
    return f"{opener} {core}"


def _compose() -> list[str]:
    sentences = []
    for family in _FAMILIES:
        for core in family.cores:
            for complement in family.complements:
                for opener in family.openers:
                    sentences.append(_join(opener, core + complement) + ".")
    return sentences


def refusal_key(text: str) -> str:
    """The near-duplicate key of a refusal: lower case, curly apostrophes straightened, contractions
    spelled out, punctuation dropped, whitespace collapsed, trailing filler words ("though", "that",
    "really", ...) stripped. Two refusals with the same key are near-duplicates."""
    key = _normalise_apostrophes(text).lower()
    for pattern, replacement in _CONTRACTIONS:
        key = re.sub(pattern, replacement, key)
    key = re.sub(r"[^a-z' ]+", " ", key)
    words = key.split()
    while len(words) > 1 and words[-1] in _TRAILING_FILLERS:
        words.pop()
    return " ".join(words)


@lru_cache(maxsize=1)
def refusal_pool() -> tuple[str, ...]:
    """All refusals, in a fixed order: composed, length-filtered to MIN_WORDS..MAX_WORDS words, and with
    near-duplicates (same :func:`refusal_key`) removed, keeping the first occurrence."""
    seen: set[str] = set()
    pool: list[str] = []
    for sentence in _compose():
        if not MIN_WORDS <= len(sentence.split()) <= MAX_WORDS:
            continue
        key = refusal_key(sentence)
        if key in seen:
            continue
        seen.add(key)
        pool.append(sentence)
    return tuple(pool)


def sample_refusal(rng: random.Random) -> str:
    """One refusal drawn uniformly from the pool; the same ``rng`` state always gives the same refusal."""
    return rng.choice(refusal_pool())


@lru_cache(maxsize=1)
def _vocabulary() -> frozenset[str]:
    return frozenset(word for sentence in refusal_pool() for word in WORD_PATTERN.findall(sentence))


def refusal_vocabulary() -> set[str]:
    """Every word used by the pool, case preserved, contractions whole ("don't", "I'm"), as matched by
    :data:`WORD_PATTERN`. The only punctuation in the pool is "," and "." (and the apostrophes inside
    words). A fresh set each call, so callers may extend it."""
    return set(_vocabulary())
