"""Typed records of the evaluation: one :class:`Generation` per evaluated question (``generations.jsonl``)
and the run's ``metrics.json`` (:class:`Metrics`).

``metrics.json`` layout (``schema_version`` "1")::

    {
      "schema_version": "1",
      "target": "all" | "visual",
      "model": "<model dir or label>",
      "forget": "<forget split, e.g. '10'>",
      "judge": "<judge description, e.g. 'offline' or 'openai:qwen-plus@https://host/v1'>",
      "sets": {"<set name>": SetMetrics, ...},
      "overall": Overall,
      "gold": GoldStandard | null,
      "attacks": {"<attack>": {"<metric>": number | string | bool | null, ...}, ...} | null,
      "requests": [RequestLeak, ...] | null   (deletion requests; absent in older files)
      "neighbour_people": {"name" | "look" | "attribute": int} | null   (absent in older files)
    }

Every key is declared with its meaning: the records below, and each per-set and overall metric once in
:mod:`smfa.eval.metrics` (``SetMetrics`` and ``Overall`` are built from those declarations). Rates and accuracies are fractions in [0, 1] (reports show
them as %); Fact and Meaningful scores are on the judges' 0-10 scale; a value is ``null`` when the sets it
needs were not evaluated. Loading (:meth:`Metrics.from_dict`, :func:`load_metrics`) checks every key and
type and names the offending key, so a corrupt or foreign file fails loudly instead of plotting nonsense.

Set names: ``<group>/<kind>[/<variant>]`` where group is ``forget`` (people in the forget split),
``retain`` (everyone else), ``forget_text`` (visual setting: the forget people's name-only questions, which
that setting keeps), ``earlier<N>`` (the people of the N-th earlier deletion request of a chain), ``user``
(user probes); kind is a question kind of :mod:`smfa.bench.schema`; variant is
empty (training phrasing and training image variants), ``paraphrase`` (held-out question templates) or
``unseen_image`` (held-out image variants). The general-VQA set is named ``general_vqa``. Neighbour sets
(:mod:`smfa.bench.neighbours`: retain people who share a name word, a look or a private value with a forgotten
person) are named ``neighbour/<set>/<kind>[/paraphrase]``: rows of the ``retain/...`` sets (with a ``--limit``,
subsampled apart).
"""

from __future__ import annotations

import json
import math
import types
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from smfa.bench.schema import TARGETS
from smfa.errors import EvalError, OutputError
from smfa.eval.metrics import overall_class, set_metrics_class
from smfa.rundir import write_json_atomic

__all__ = ["EvalError", "Generation", "GoldStandard", "Metrics", "Overall", "RequestLeak", "SetMetrics", "load_metrics", "save_metrics"]

SCHEMA_VERSION = "1"
METRICS_FILE = "metrics.json"
GENERATIONS_FILE = "generations.jsonl"


@dataclass
class Generation:
    """One evaluated question and the model's answer (one line of ``generations.jsonl``).

    Keys:
        set: evaluation set name, e.g. ``forget/image_memory`` (see the module docstring).
        question_id: the bench question id.
        kind: question kind (``image_memory``, ``text_memory``, ``understanding``, ``general_vqa``,
            ``unanswerable``).
        attribute: the asked attribute (``home_city``, ``hair_colour``, ``shape_count``, ...).
        question: the question text as asked (after any prompt attack).
        answer: the model's decoded answer.
        reference: the bench's reference answer (a short sentence).
        fact: the key fact inside the reference that matching looks for; ``""`` when the correct answer is
            a refusal (unanswerable questions).
        person_id: the person asked about; ``null`` for general VQA.
        is_forget_person: whether the person is in the forget split.
        loss: mean per-token NLL of the reference answer under the model (the forget-NLL KS test, MIA); ``null``
            when not computed.
        format: the question's answer format, ``generation`` (a generated answer), ``choice`` (``answer`` is the
            option letter the model picked: the lowest mean per-token NLL option, :func:`smfa.eval.generate.pick_option`;
            ``fact`` the correct letter) or ``cloze`` (a generated fill-in); absent in files of older versions.
    """

    set: str
    question_id: str
    kind: str
    attribute: str
    question: str
    answer: str
    reference: str
    fact: str
    person_id: str | None
    is_forget_person: bool
    loss: float | None = None
    format: str = "generation"

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Any, source: str = GENERATIONS_FILE) -> Generation:
        return _from_dict(cls, data, source, "")


# One value per declared metric (smfa.eval.metrics): keys, docs and loading checks follow the declarations.
SetMetrics = set_metrics_class()
Overall = overall_class()


@dataclass
class GoldStandard:
    """Closeness to the oracle (trained on retain only, never saw the forget people) as a KS test on
    per-question answer NLL (``metrics.json["gold"]``). The key keeps TOFU's name, ``forget_quality``, but
    TOFU's test runs on truth ratios, not on answer NLL: the numbers do not compare.

    Keys:
        forget_quality: p-value of the two-sample Kolmogorov-Smirnov test between the unlearned model's and
            the oracle's per-question answer NLL on the forget questions; high (near 1) = the loss
            distributions are indistinguishable, i.e. the model looks like it never saw the forget people.
        vanilla_forget_quality: the same test for the vanilla (before unlearning) model, as the baseline the
            unlearning should improve on; ``null`` when the vanilla losses were not given.
        n: number of forget questions in the test.
        oracle: the oracle run directory or label.
        sets: the evaluation sets whose losses entered the test.
    """

    forget_quality: float
    vanilla_forget_quality: float | None
    n: int
    oracle: str = ""
    sets: list[str] = field(default_factory=list)


@dataclass
class RequestLeak:
    """The leak of one deletion request's people (``metrics.json["requests"]``, one per request of the chain,
    oldest first, the evaluated run's own request last). The rates are :class:`Overall`'s ``forget_leak_*``
    computed on that request's people only (sets ``earlier<N>/...`` for earlier requests, ``forget/...`` for
    the run's own).

    Keys:
        request: position in the chain (1 = the first request answered from the vanilla).
        people: number of people the request named.
        current: whether this is the evaluated run's own request.
        leak_image: leak rate of their memory questions asked with their photo (training phrasing).
        leak_text: leak rate of their name-only memory questions (training phrasing); ``null`` when the
            setting keeps name-only knowledge (``visual``).
        leak_paraphrase: leak rate under held-out phrasings.
        leak_unseen_image: leak rate on held-out photo variants.
        n: number of memory questions behind the four rates.
    """

    request: int
    people: int
    current: bool
    leak_image: float | None
    leak_text: float | None
    leak_paraphrase: float | None
    leak_unseen_image: float | None
    n: int


@dataclass
class Metrics:
    """The content of a run's ``metrics.json``.

    Keys:
        schema_version: ``"1"``; bumped when a key changes meaning or disappears.
        target: the unlearning setting, ``all`` (forget everything about the forget people) or ``visual``
            (forget only the photo link; name-only questions are kept).
        model: the evaluated model (run directory, hub id or label).
        forget: the forget split (``5``, ``10``, ``15`` or ``val``), or ``request`` for named people.
        judge: the judge that produced Fact/Meaningful scores (:meth:`smfa.eval.judges.Judge.describe`;
            never contains credentials).
        sets: per-set metrics, by set name (:class:`SetMetrics`).
        overall: the paper's aggregates (:class:`Overall`).
        gold: the answer-NLL KS test against the oracle (:class:`GoldStandard`), ``null`` without an oracle.
        attacks: robustness results by attack name (``prompt_prefix_injection``, ``relearn``, ``quantize_4bit``,
            ``quantize_nf4``, ``mia``, ...; :mod:`smfa.eval.attacks` lists them), each a flat mapping of metric
            name to a number, string, bool or null; ``null`` when no attack was run.
        requests: the leak of every deletion request's people (:class:`RequestLeak`), for a run that
            answered a request of named people or continues a chain of requests; ``null`` otherwise.
        neighbour_people: the number of retain people in each neighbour set (``name``, ``look``, ``attribute``;
            :mod:`smfa.bench.neighbours`), whose scores are the ``neighbour/...`` sets and ``Overall``'s
            ``neighbour_*`` keys; ``null`` when neighbours were not evaluated (a k-sweep point, older files).
    """

    target: str
    model: str
    forget: str
    judge: str
    sets: dict[str, SetMetrics]
    overall: Overall
    gold: GoldStandard | None = None
    attacks: dict[str, dict[str, Any]] | None = None
    requests: list[RequestLeak] | None = None
    neighbour_people: dict[str, int] | None = None
    schema_version: str = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict, ``schema_version`` first."""
        out: dict[str, Any] = {"schema_version": self.schema_version}
        for f in fields(self):
            if f.name != "schema_version":
                out[f.name] = _plain(getattr(self, f.name))
        return out

    @classmethod
    def from_dict(cls, data: Any, source: str = METRICS_FILE) -> Metrics:
        """Build from parsed JSON, checking every key and type; raises :class:`OutputError` naming the key."""
        if not isinstance(data, dict):
            raise OutputError(f"{source}: expected a JSON object at the top level, got {type(data).__name__}")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise OutputError(
                f"{source}: schema_version {version!r} is not supported by this smfa (it reads {SCHEMA_VERSION!r}); "
                "re-run `smfa evaluate` with this version"
            )
        metrics = _from_dict(cls, data, source, "")
        if metrics.target not in TARGETS:
            raise OutputError(f"{source}: key 'target' must be 'all' or 'visual', got {metrics.target!r}")
        for name, values in (metrics.attacks or {}).items():
            for key, value in values.items():
                if not (value is None or isinstance(value, (int, float, str, bool))):
                    raise OutputError(
                        f"{source}: key 'attacks.{name}.{key}' must be a number, string, bool or null, "
                        f"got {type(value).__name__}"
                    )
        return metrics


def save_metrics(metrics: Metrics, run_dir: str | Path) -> Path:
    """Write ``run_dir/metrics.json`` atomically; returns its path."""
    path = Path(run_dir) / METRICS_FILE
    write_json_atomic(path, metrics.to_dict())
    return path


def load_metrics(path: str | Path) -> Metrics:
    """Read ``metrics.json`` from an evaluation run directory (or the file itself) and validate it."""
    path = Path(path)
    file = path / METRICS_FILE if path.is_dir() else path
    if not file.is_file():
        where = path if path.exists() else f"{path} (which does not exist)"
        raise OutputError(
            f"{where} has no {METRICS_FILE}: it is not an evaluation run directory; pass the --out "
            "directory of `smfa evaluate`"
        )
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise OutputError(f"{file} is not valid JSON (line {exc.lineno}): re-run `smfa evaluate`") from exc
    return Metrics.from_dict(data, source=str(file))


# ---------------------------------------------------------------------------------------------------------
# Validation: walk the dataclass type hints, so a field added above is checked without extra code.


def _plain(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # JSON has no NaN/inf; "not computable" is null
    return obj


def _type_name(hint: Any) -> str:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(hint))
    if hint is type(None):
        return "null"
    if origin is dict:
        return "an object"
    if origin is list:
        return "a list"
    if is_dataclass(hint):
        return "an object"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(hint, str(hint))


def _check(value: Any, hint: Any, source: str, key: str, expected: Any = None) -> Any:
    """``value`` checked against ``hint`` (``expected``: the type to name in the error, e.g. the Optional)."""
    origin = get_origin(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(hint)
        if value is None:
            if type(None) in args:
                return None
        else:
            inner = [a for a in args if a is not type(None)]
            if len(inner) == 1:
                return _check(value, inner[0], source, key, expected=hint)
    elif is_dataclass(hint):
        if isinstance(value, dict):
            return _from_dict(hint, value, source, key)
    elif origin is dict:
        if isinstance(value, dict):
            value_hint = get_args(hint)[1]
            return {k: _check(v, value_hint, source, f"{key}.{k}") for k, v in value.items()}
    elif origin is list:
        if isinstance(value, list):
            item_hint = get_args(hint)[0]
            return [_check(v, item_hint, source, f"{key}[{i}]") for i, v in enumerate(value)]
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint in (str, bool):
        if isinstance(value, hint):
            return value
    shown = json.dumps(value)[:60] if value is None or isinstance(value, (int, float, str, bool)) else type(value).__name__
    raise OutputError(f"{source}: key {key!r} must be {_type_name(expected or hint)}, got {shown}")


def _from_dict(cls: Any, data: Any, source: str, key: str) -> Any:
    where = f"key {key!r}" if key else "the top level"
    if not isinstance(data, dict):
        raise OutputError(f"{source}: {where} must be an object ({cls.__name__}), got {type(data).__name__}")
    hints = get_type_hints(cls)
    declared = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(declared))
    if unknown:
        path = f"{key}.{unknown[0]}" if key else unknown[0]
        raise OutputError(
            f"{source}: unknown key {path!r} in {cls.__name__} (known: {', '.join(declared)}); the file was "
            "written by another smfa version or edited by hand"
        )
    values = {}
    for name, f in declared.items():
        path = f"{key}.{name}" if key else name
        if name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise OutputError(f"{source}: missing key {path!r} ({cls.__name__})")
            continue
        values[name] = _check(data[name], hints[name], source, path)
    return cls(**values)
