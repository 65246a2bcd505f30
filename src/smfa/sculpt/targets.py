"""Which weight tensor each adapter module updates: adapter module paths matched to the weight names of a
model or checkpoint, across the prefixes and layouts one architecture is saved under."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from smfa.errors import SculptError


def _canonical(name: str) -> str:
    # Checkpoints of one architecture differ by where "model" sits: LLaVA's transformers layout says
    # model.language_model.layers.0…, its legacy layout language_model.model.layers.0…
    return ".".join(part for part in name.split(".") if part != "model")


def _suffix_matches(module: str, bases: Iterable[str]) -> list[str]:
    """Bases equal to ``module`` up to a leading dotted prefix on either side."""
    return [b for b in bases if b == module or b.endswith("." + module) or module.endswith("." + b)]


def resolve_targets(modules: Iterable[str], weight_names: Iterable[str], where: str = "the model") -> dict[str, str]:
    """Map adapter module paths to the weight tensors they update.

    In order: the exact name ``<module>.weight``; else a unique match up to a leading prefix on either side
    (an adapter trained on the bare language model, merged into a multimodal checkpoint); else the same
    with the ``model`` path components ignored (transformers vs legacy LLaVA layouts). Raises
    :class:`SculptError` when a module matches no weight, several weights, or a weight another module took.
    """
    bases = [n[: -len(".weight")] for n in weight_names if n.endswith(".weight")]
    base_set = set(bases)
    canonical: dict[str, list[str]] = {}
    for b in bases:
        canonical.setdefault(_canonical(b), []).append(b)
    targets: dict[str, str] = {}
    for module in modules:
        if module in base_set:
            found = [module]
        else:
            found = _suffix_matches(module, bases)
            if not found:
                found = [b for c in _suffix_matches(_canonical(module), canonical) for b in canonical[c]]
        if not found:
            raise SculptError(
                f"adapter module {module!r} matches no weight in {where}; the adapter was trained on a "
                "different model"
            )
        if len(found) > 1:
            raise SculptError(
                f"adapter module {module!r} matches several weights in {where} "
                f"({', '.join(sorted(found)[:5])}); it is ambiguous which one the adapter updates"
            )
        targets[module] = found[0] + ".weight"
    for weight, count in Counter(targets.values()).items():
        if count > 1:
            owners = sorted(m for m, w in targets.items() if w == weight)
            raise SculptError(f"adapter modules {owners} all map to the weight {weight} in {where}")
    return targets
