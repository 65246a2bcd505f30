"""The short fact of an imported memory row: the private value inside its answer that accuracy and leak
matching look for (``smfa.eval.text.leaks_fact``), never the whole answer sentence — with the whole sentence
as the fact, an answer that states the value in other words "leaks" nothing.

A source benchmark that gives no fact per question still names its private values elsewhere (MLLMU-Bench: the
blanks of its ``Mask_Task`` and the correct options of its ``Classification_Task``). :func:`derive_fact`
finds those values inside an answer; an importer refuses a row where it finds none.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from smfa.bench.schema import FACT_SEPARATOR

# Values that answer a yes/no question: never a fact found by substring (a refusal says "no" too).
POLAR_VALUES = frozenset({"yes", "no", "true", "false"})


def _span(text: str, value: str, ignore_case: bool) -> tuple[int, int] | None:
    """Where ``value`` occurs in ``text`` on whole-word boundaries; ``None`` if nowhere."""
    match = re.search(rf"(?<!\w){re.escape(value)}(?!\w)", text, flags=re.IGNORECASE if ignore_case else 0)
    return match.span() if match else None


def derive_fact(answer: str, question: str, values: Iterable[str], ignore_case: bool = True) -> str | None:
    """The fact of ``answer``: every one of ``values`` (a person's known private values) that ``answer`` states
    and ``question`` does not (an answer repeating the question's own words gives nothing away), on whole-word
    boundaries (``ignore_case``: in any letter case; names are matched as written), as spelled in ``answer``,
    in answer order, joined by ``" | "`` (a multi-part fact: correct when all are stated, a leak when any is);
    a value inside a longer found value is dropped. ``None`` when ``answer`` states none of them.

    >>> derive_fact("Ada lives in Norvale, Esk.", "Where does Ada live?", ["Ada", "Norvale", "norvale, esk", "No"])
    'Norvale, Esk'
    """
    spans: set[tuple[int, int]] = set()
    for value in values:
        value = value.strip()
        if len(value) < 2 or value.lower() in POLAR_VALUES or FACT_SEPARATOR.strip() in value:
            continue
        span = _span(answer, value, ignore_case)
        if span is not None and _span(question, value, ignore_case) is None:
            spans.add(span)
    kept = sorted(s for s in spans if not any(o != s and o[0] <= s[0] and s[1] <= o[1] for o in spans))
    return FACT_SEPARATOR.join(answer[a:b] for a, b in kept) or None


__all__ = ["POLAR_VALUES", "derive_fact"]
