"""Human views of a bench: a counts table and a contact sheet of sample images with their labels."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

from smfa.bench.load import Bench
from smfa.bench.questions import fundus_path, portrait_path
from smfa.bench.validate import forget_split_names, is_imported
from smfa.errors import ConfigError, OutputError

GROUPS = ("forget_5", "forget_10", "forget_15", "forget_val", "reference", "retain", "holdout", "general", "total")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(cells[0]), fmt(["-" * w for w in widths])] + [fmt(r) for r in cells[1:]])


def format_counts(meta: dict[str, Any]) -> str:
    """The counts of ``bench.json`` as plain-text tables."""
    counts = meta["counts"]
    people = counts["people"]
    if is_imported(meta):  # an imported bench counts people by role/split and questions by kind/format
        return "\n".join([
            f"{meta['name']}  preset={meta['preset']}  seed={meta['seed']}  version={meta['version']}", "",
            _table(["people", "count"], [[k, v] for k, v in people.items()]), "",
            _table(["questions (kind/format)", "count"], [[k, v] for k, v in counts["questions"].items()]), "",
            _table(["rows", "count"], [[k, v] for k, v in counts["rows"].items()]), "",
            _table(["anchor (D_r^few)", "count"], [[k, v] for k, v in counts["anchor"].items()]),
        ])
    parts = [
        f"S-MLLMUn Bench  preset={meta['preset']}  seed={meta['seed']}  image_size={meta['config']['image_size']}px  version={meta['version']}",
        "",
        _table(["people", "count"], [[k, v] for k, v in people.items()]),
        "",
        _table(["images", "count"], [[k, v] for k, v in counts["images"].items()]),
        "",
        _table(["questions"] + list(GROUPS), [[k] + [v.get(g, 0) for g in GROUPS] for k, v in counts["questions"].items()]),
        "(retain = the evaluation pool: known people in none of forget_15 / forget_val / reference; "
        "reference = retain people whose questions, not labels, a method may use; forget_5 ⊂ forget_10 ⊂ forget_15)",
        "",
        _table(["rows", "count"], [[k, v] for k, v in counts["rows"].items()]),
        "",
        _table(["anchor (D_r^few)", "count"], [[k, v] for k, v in counts["anchor"].items()]),
    ]
    return "\n".join(parts)


def _sample_people(bench: Bench, n: int) -> list[str]:
    """The first known people, with about a third patients so fundus scans show up too."""
    known = sorted(bench.known_people())
    patients = [p for p in known if bench.people[p].fundus][: max(1, n // 3)]
    others = [p for p in known if p not in patients][: n - len(patients)]
    return sorted(patients + others)


def contact_sheet(bench: Bench, out: str | Path, n_people: int = 6) -> Path:
    """Write a PNG grid: every portrait variant and fundus scan of a few people, with their labels,
    and a row of shape pictures. Refuses to write inside the bench directory (which is checksummed)."""
    out = Path(out).expanduser().resolve()
    root = bench.root.resolve()
    if out == root or root in out.parents:
        raise OutputError(f"{out} is inside the bench directory {root}, whose files are checksummed; choose an --out outside it")
    if out.suffix.lower() != ".png":
        raise OutputError(f"--out {out} must end in .png")
    if not out.parent.is_dir():
        raise OutputError(f"the folder of --out {out} does not exist; create it or choose another --out")

    fig = _imported_figure(bench, n_people) if is_imported(bench.meta) else _built_figure(bench, n_people)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return out


def _blank_grid(rows: int, cols: int, width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    return fig, axes


def _imported_figure(bench: Bench, n_people: int, cols: int = 6):
    """An imported bench: a few people (forget people first), each with up to ``cols`` of their distinct
    images titled by the kind of question asked about them, and a row of images no person owns (general VQA)."""
    forget = set().union(*(bench.splits[name] for name in forget_split_names(bench.splits)))
    with_images = sorted({q.person_id for q in bench.questions if q.person_id and q.image})
    people = sorted(with_images, key=lambda pid: (pid not in forget, pid))[:n_people]
    general = [q for q in bench.questions if q.person_id is None and q.image][:cols]
    rows = [_distinct_images(bench, pid)[:cols] for pid in people] + ([general] if general else [])
    if not rows:
        raise ConfigError(f"{bench.root} has no question with an image: nothing to draw (its counts are printed above)")
    cols = max(len(row) for row in rows)
    fig, axes = _blank_grid(len(rows), cols, 1.6 * cols + 2.6, 1.75 * len(rows) + 0.4)
    for r, row in enumerate(rows):
        if r < len(people):
            pid = people[r]
            role = "forget" if pid in forget else "reference" if pid in bench.reference_people() else bench.people[pid].role
            axes[r][0].set_ylabel(f"{bench.people[pid].name}\n{pid}\n({role})", rotation=0, ha="right", va="center", fontsize=7)
        else:
            axes[r][0].set_ylabel("no person\n(general)", rotation=0, ha="right", va="center", fontsize=7)
        for c, q in enumerate(row):
            axes[r][c].imshow(bench.load_image(q), interpolation="nearest")
            axes[r][c].set_title(f"{q.kind}\n{q.image_split or ''}".strip(), fontsize=7)
    fig.suptitle(str(bench.meta.get("name") or f"{bench.root.name} (imported from {bench.meta['source']['format']})"), fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    return fig


def _distinct_images(bench: Bench, person_id: str) -> list[Any]:
    seen: dict[str, Any] = {}
    for q in bench.questions:
        if q.person_id == person_id and q.image and q.image not in seen:
            seen[q.image] = q
    return list(seen.values())


def _built_figure(bench: Bench, n_people: int):
    """A built bench: every portrait variant and fundus scan of a few people, and a row of shape pictures."""
    cfg = bench.meta["config"]
    n_var, n_fundus = int(cfg["n_variants"]), int(cfg["n_fundus_variants"])
    n_train = n_var - int(cfg["n_heldout_variants"])
    people = _sample_people(bench, n_people)
    cols = n_var + n_fundus
    shapes = [q for q in bench.questions if q.kind == "general_vqa" and q.attribute == "shape_count" and q.phrasing == "train"][:cols]
    by_image = {q.image: q for q in bench.questions if q.image}  # load_image names the question on failure
    fig, axes = _blank_grid(len(people) + 1, cols, 1.6 * cols + 2.6, 1.75 * (len(people) + 1))
    for r, pid in enumerate(people):
        p = bench.people[pid]
        v = p.visual
        label = (
            f"{p.name}\n{pid}\nhair {v['hair_colour']}, {v['hair_style']}\nshirt {v['shirt_colour']}\n"
            f"bg {v['background_colour']}\nglasses {v['glasses']}, hat {v['hat']}"
        )
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
        paths = [(portrait_path(pid, k), f"v{k} ({'train' if k < n_train else 'heldout'})") for k in range(n_var)]
        if p.fundus:
            f = p.fundus
            paths += [
                (
                    fundus_path(pid, k),
                    f"scan {k} ({'train' if k < n_fundus - 1 else 'heldout'})\n{f['lesion_count']} {f['lesion_colour']}, disc {f['disc_side']}",
                )
                for k in range(n_fundus)
            ]
        for c, (rel, title) in enumerate(paths):
            axes[r][c].imshow(bench.load_image(by_image[rel]), interpolation="nearest")
            axes[r][c].set_title(title, fontsize=7)
    for c, q in enumerate(shapes):
        axes[-1][c].imshow(bench.load_image(q), interpolation="nearest")
        axes[-1][c].set_title(f"{q.answer}", fontsize=7)
    axes[-1][0].set_ylabel("general VQA", rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle(f"S-MLLMUn Bench {bench.meta['preset']} (seed {bench.meta['seed']}, {cfg['image_size']} px)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))  # room for the title
    return fig

