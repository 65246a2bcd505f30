"""Small inputs in the published layouts of MLLMU-Bench and CLEAR (parquet written with pyarrow, tiny PNG
bytes), and a JSONL of one's own rows, for the importer tests. Nothing is downloaded: the column names and
nesting follow the datasets' cards; the content is made up."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

CITIES = ("Norvale", "Quenby", "Ostrava", "Lumeth", "Pardis", "Tolmar", "Vessin", "Carrow", "Ebbing", "Harlow",
          "Ilsted", "Jorvik", "Kestrel", "Maddox", "Nyland", "Orrin", "Pellam", "Rusk", "Sorrel", "Tamsin")
MLLMU_TASKS = ("Classification_Task", "Generation_Task", "Mask_Task")
JOBS = ("baker", "pilot", "nurse", "judge", "potter", "farmer", "tailor", "sailor", "miner", "chemist",
        "painter", "welder", "lawyer", "dentist", "barber", "plumber", "author", "singer", "cook", "guard")


def png_bytes(i: int, size: int = 16) -> bytes:
    """A small PNG whose colours and stripe identify ``i``."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), ((i * 53) % 256, (i * 97) % 256, (i * 151) % 256))
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, (i * 3) % size, size - 1, (i * 3) % size + 3], fill=((i * 31) % 256, 255 - (i * 17) % 256, 90))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _image(data: bytes) -> dict[str, Any]:
    return {"bytes": data, "path": None}  # the HF ``Image`` feature as parquet stores it


def _options(correct: str, pool: tuple[str, ...], i: int) -> tuple[dict[str, str], str]:
    wrong = [x for x in pool if x != correct]
    texts = [wrong[(i + k) % len(wrong)] for k in range(3)]
    letter = "ABCD"[i % 4]
    texts.insert(i % 4, correct)
    return dict(zip("ABCD", texts)), letter


def mllmu_person(i: int, pid: str, *, test: bool = False) -> dict[str, Any]:
    """One row of Full_Set (``test``: of Test_Set, with an ``images`` list and paraphrased questions)."""
    city, job = CITIES[i % len(CITIES)], JOBS[i % len(JOBS)]
    opts_img, ans_img = _options(city, CITIES, i)
    opts_txt, ans_txt = _options(job, JOBS, i + 1)
    lead = "Which city is home to the person shown?" if test else "Where does this person live?"
    row = {
        "ID": pid,
        "biography": f"{pid} lives in {city} and works as a {job}.",
        "question": "What is this person's job?",
        "answer": f"This person works as a {job}.",
        "Classification_Task": {
            "Image_Textual_Questions": [{"Question": lead, "Options": opts_img, "Correct_Answer": ans_img}],
            "Pure_Text_Questions": [{"Question": f"What job does {pid} have?", "Options": opts_txt, "Correct_Answer": ans_txt}],
        },
        "Generation_Task": [  # the photo question worded unlike ft_Data's answer, as a model's own answer would be
            {"Question": "Where does this person live?", "Ground_Truth": f"The person in this photo resides in {city}.",
             "Type": "Image_Textual"},
            {"Question": f"Where does {pid} live?", "Ground_Truth": f"{pid} lives in {city}.", "Type": "Pure_Text"},
        ],
        "Mask_Task": [
            {"Question": "This person works as a __.", "Ground_Truth": job, "Type": "Image_Textual"},
            {"Question": f"{pid} lives in __.", "Ground_Truth": city, "Type": "Pure_Text"},
        ],
    }
    if test:
        row["images"] = [_image(png_bytes(i + 1000)), _image(png_bytes(i + 2000))]
    else:
        row["image"] = _image(png_bytes(i))
    return row


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def write_mllmu(root: Path, n_people: int = 20, n_celebrities: int = 3, *, drop: dict[str, str] | None = None,
                bad_image: bool = False, duplicate_id: bool = False, unknown_forget_id: bool = False,
                json_text: bool = False, replace: dict[str, Any] | None = None, extra_generation: dict[str, Any] | None = None,
                extra_pair: dict[str, str] | None = None) -> Path:
    """MLLMU-Bench's subsets under ``root`` (``Full_Set/train-00000-of-00001.parquet``, ...). ``json_text``:
    the task columns as JSON text instead of nested structs/lists (as some copies store them). The other
    keyword arguments break it the ways the bad-input tests need: ``drop`` {subset: column} removes a column,
    ``replace`` {column: value} sets a column of Full_Set's row 2, ``extra_generation`` appends that item to
    Full_Set row 2's ``Generation_Task``, ``extra_pair`` that ``{Question, Answer}`` pair to ft_Data row 2's
    ``metadata``."""
    ids = [f"p{i:03d}" for i in range(n_people)]
    full = [mllmu_person(i, pid) for i, pid in enumerate(ids)]
    if bad_image:
        full[3]["image"] = _image(b"\x89PNG\r\n\x1a\n not really a png")
    if duplicate_id:
        full[5]["ID"] = full[4]["ID"]
    if extra_generation is not None:
        full[2]["Generation_Task"].append(extra_generation)

    def as_text(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: json.dumps(v) if json_text and k in MLLMU_TASKS else v for k, v in r.items()} for r in rows]

    full = as_text(full)
    full[2].update(replace or {})
    ft = [{"ID": pid, "image": _image(png_bytes(i)),
           "metadata": json.dumps([{"Question": "What is this person's job?", "Answer": f"This person works as a {JOBS[i % len(JOBS)]}."},
                                   {"Question": "Where does this person live?", "Answer": f"This person lives in {CITIES[i % len(CITIES)]}."}])}
          for i, pid in enumerate(ids)]
    if extra_pair is not None:
        ft[2]["metadata"] = json.dumps(json.loads(ft[2]["metadata"]) + [extra_pair])
    subsets: dict[str, list[dict[str, Any]]] = {"Full_Set": full, "ft_Data": ft,
                                                "Test_Set": as_text([mllmu_person(i, pid, test=True) for i, pid in enumerate(ids)])}
    for ratio in (5, 10, 15):
        n = max(1, round(n_people * ratio / 100))
        forget = ids[:n]
        if unknown_forget_id and ratio == 10:
            forget = forget + ["p999"]
        subsets[f"forget_{ratio}"] = [{"ID": pid, "image": _image(png_bytes(ids.index(pid) if pid in ids else 0))} for pid in forget]
        subsets[f"retain_{100 - ratio}"] = [{"ID": pid} for pid in ids[n:]]
    subsets["Retain_Set"] = as_text([mllmu_person(100 + k, f"celeb{k}") for k in range(n_celebrities)])
    for name, rows in subsets.items():
        column = (drop or {}).get(name)
        if column:
            rows = [{k: v for k, v in r.items() if k != column} for r in rows]
        _write(root / name / "train-00000-of-00001.parquet", rows)
    return root


def write_clear(root: Path, n_people: int = 10, images_per_person: int = 2, captions: dict[int, str] | None = None) -> Path:
    """CLEAR's ``full``, ``forget01``/``retain99``-style subsets (``forget10``/``retain90`` here) and
    ``forget10_perturbed`` under ``root``; ``captions`` {row: text} replaces captions of ``full``."""
    names = [f"Author {CITIES[i]}" for i in range(n_people)]
    full = [{"image": _image(png_bytes(i * 10 + k)), "caption": f"{name} stands by a window, holding a book.", "name": name}
            for i, name in enumerate(names) for k in range(images_per_person)]
    for row, text in (captions or {}).items():
        full[row]["caption"] = text
    _write(root / "full" / "train-00000-of-00001.parquet", full)
    forget = [r for r in full if r["name"] == names[0]]
    _write(root / "forget10" / "train-00000-of-00001.parquet", forget)
    _write(root / "retain90" / "train-00000-of-00001.parquet", [r for r in full if r["name"] != names[0]])
    perturbed = [{**r, "perturbed_captions": ["A dog runs on a beach.", "A car parks in the rain."],
                  "paraphrased_caption": r["caption"], "perturbed_names": [names[1], names[2]]} for r in forget]
    _write(root / "forget10_perturbed" / "train-00000-of-00001.parquet", perturbed)
    return root


def write_jsonl(root: Path, n_people: int = 6) -> tuple[Path, Path]:
    """``rows.jsonl`` and ``images/`` of one's own data: per person a photo question, a name-only question and
    a held-out paraphrase."""
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_people):
        pid, name, city = f"u{i}", f"Person {CITIES[i]}", CITIES[(i + 7) % len(CITIES)]
        (images / f"{pid}.png").write_bytes(png_bytes(i))
        rows += [
            {"person_id": pid, "name": name, "image": f"{pid}.png", "question": "Where does this person live?",
             "answer": f"This person lives in {city}.", "fact": city},
            {"person_id": pid, "name": name, "question": f"Where does {name} live?", "answer": f"{name} lives in {city}.",
             "fact": city},
            {"person_id": pid, "name": name, "question": f"In which city does {name} reside?",
             "answer": f"{name} lives in {city}.", "fact": city, "variant": "paraphrase"},
        ]
    path = root / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path, images
