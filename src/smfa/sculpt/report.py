"""The sculpt report: what a sculpt + merge did per module and in total, for each forget view, written as
``sculpt_report.json`` and ``sculpt_report.md``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from smfa.rundir import write_json_atomic, write_text_atomic
from smfa.sculpt.mask import EPS, MaskStats, aggregate_stats

REPORT_JSON = "sculpt_report.json"
REPORT_MD = "sculpt_report.md"


@dataclass
class SculptView:
    """One forget adapter sculpted against the anchor (two of them in the dual variant)."""

    forget_adapter: str
    k: float
    modules: dict[str, MaskStats] = field(default_factory=dict)  # adapter module → its stats

    def totals(self, eps: float = EPS) -> MaskStats:
        return aggregate_stats(self.modules.values(), eps)


@dataclass
class SculptReport:
    """What a sculpt + merge did: per module and in total, for each forget view."""

    mode: str
    eps: float
    anchor_adapter: str
    views: list[SculptView]
    targets: dict[str, str]  # adapter module → the weight tensor it was merged into
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {
            "mode": self.mode,
            "eps": self.eps,
            "anchor_adapter": self.anchor_adapter,
            "seconds": round(self.seconds, 3),
            "views": [
                {
                    "forget_adapter": v.forget_adapter,
                    "k": v.k,
                    "totals": asdict(v.totals(self.eps)),
                    "modules": {m: {"weight": self.targets.get(m), **asdict(s)} for m, s in v.modules.items()},
                }
                for v in self.views
            ],
        }

    def to_markdown(self) -> str:
        lines = [f"# SMFA sculpt — mode `{self.mode}`", "", f"- anchor adapter: `{self.anchor_adapter}`"]
        head = "| module | masked % | conflict % | magnitude % | ρ | ‖ΔW_f‖ | ‖ΔW_a‖ | ‖ΔW'_f‖ | cos(ΔW_f, ΔW_a) |"
        for v in self.views:
            lines += ["", f"## forget adapter `{v.forget_adapter}`, k = {v.k:g}", "", head, "|---" * 9 + "|"]
            rows = list(v.modules.items()) + [("**total**", v.totals(self.eps))]
            for name, s in rows:
                lines.append(
                    f"| {name} | {100 * s.share_masked:.2f} | {100 * s.share_conflict:.2f} | "
                    f"{100 * s.share_magnitude:.2f} | {s.rho:.4g} | {s.norm_forget:.4g} | {s.norm_anchor:.4g} | "
                    f"{s.norm_sculpted:.4g} | {s.cosine:+.4f} |"
                )
        return "\n".join(lines) + "\n"


def write_sculpt_report(report: SculptReport, out_dir: str | Path) -> Path:
    """Write ``sculpt_report.json`` and ``sculpt_report.md`` into ``out_dir`` (atomically); return the JSON path."""
    out = Path(out_dir)
    write_json_atomic(out / REPORT_JSON, report.to_dict())
    write_text_atomic(out / REPORT_MD, report.to_markdown())
    return out / REPORT_JSON

