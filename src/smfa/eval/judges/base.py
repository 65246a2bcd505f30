"""The judge interface and registry: a judge scores ``(question, answer, reference, fact, kind)`` →
``(fact, meaningful)``, both 0-10; judges are registered by name (``@register_judge("offline")``) and built
with ``get_judge(name, **options)``."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from smfa.errors import ConfigError, EvalError


class JudgeError(EvalError):
    """The judge could not score: endpoint unreachable, HTTP error, or a reply without a score."""


@dataclass(frozen=True)
class JudgeItem:
    """One answer to score."""

    question: str
    answer: str
    reference: str
    fact: str
    kind: str


Scores = tuple[float, float]  # (fact, meaningful), each 0-10


class Judge(abc.ABC):
    """Scores answers: Fact Score and Meaningful Score, both 0-10."""

    name: ClassVar[str] = ""

    @abc.abstractmethod
    def score(self, question: str, answer: str, reference: str, fact: str, kind: str) -> Scores:
        """``(fact, meaningful)`` for one answer."""

    def score_batch(self, items: Sequence[JudgeItem]) -> list[Scores]:
        """Scores for many answers, in order."""
        return [self.score(i.question, i.answer, i.reference, i.fact, i.kind) for i in items]

    def describe(self) -> str:
        """What produced the scores, for ``metrics.json["judge"]`` (never credentials)."""
        return self.name


_JUDGES: dict[str, type[Judge]] = {}


def register_judge(name: str) -> Callable[[type[Judge]], type[Judge]]:
    """Class decorator: make a :class:`Judge` available as ``get_judge(name)`` / ``--judge name``."""

    def wrap(cls: type[Judge]) -> type[Judge]:
        if name in _JUDGES and _JUDGES[name] is not cls:
            raise ConfigError(f"judge name {name!r} is registered twice ({_JUDGES[name].__name__}, {cls.__name__})")
        cls.name = name
        _JUDGES[name] = cls
        return cls

    return wrap


def available_judges() -> list[str]:
    """The registered judge names, sorted."""
    return sorted(_JUDGES)


def get_judge(name: str = "offline", **options: Any) -> Judge:
    """Build the judge registered as ``name`` with ``options`` (its constructor's keyword arguments)."""
    if name not in _JUDGES:
        raise ConfigError(f"unknown judge {name!r}; available: {', '.join(available_judges())}")
    try:
        return _JUDGES[name](**options)
    except TypeError as exc:
        raise ConfigError(f"judge {name!r} does not accept these options ({', '.join(options)}): {exc}") from exc
