"""Question phrasings of bench v2: many training phrasings per attribute and a disjoint set of held-out
phrasings, composed from small parts so that a model must learn *what* is asked, not one sentence.

A phrasing is ``wrapper.format(q=frame)``: a **frame** carries the content ("Where does {name} live?",
"Complete the sentence: {name} lives in") and a **wrapper** the conversational noise ("Quick question.
{q}"). Training phrasings are the training frames under the training wrappers; held-out phrasings are the
held-out frames under every wrapper — a held-out question's content is never trained on for that
attribute, and every word in it occurs somewhere in the training phrasings (checked by a test), so a model
that knows the person can answer it.

Image-memory frames are the text-memory frames with the name replaced by a reference to the photo ("this
person", "the person in this photo", ...), plus the name questions that only an image can ask.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Templates:
    train: tuple[str, ...]
    paraphrase: tuple[str, ...]


TRAIN_WRAPPERS = ("{q}", "Please answer: {q}", "Question: {q}", "Quick question. {q}")
HELDOUT_WRAPPERS = ("I have a question. {q}", "Please tell me: {q}")

# Ways to refer to the person in a photo; a possessive frame ("{name}'s job") always uses the first.
IMAGE_SUBJECTS = ("this person", "the person in this photo", "the person shown", "the person in this picture")


def compose(train_frames: tuple[str, ...], heldout_frames: tuple[str, ...]) -> Templates:
    """Training frames × training wrappers; held-out frames × every wrapper (a frame's words are kept)."""
    train = tuple(w.format(q=f) for f in train_frames for w in TRAIN_WRAPPERS)
    wrappers = TRAIN_WRAPPERS + HELDOUT_WRAPPERS
    paraphrase = tuple(w.format(q=f) for f in heldout_frames for w in wrappers)
    return Templates(train, paraphrase)


def about_photo(frames: tuple[str, ...]) -> tuple[str, ...]:
    """Text frames asked about the person in a photo: ``{name}`` → a subject, rotating over
    :data:`IMAGE_SUBJECTS` (the first for possessives); a frame starting with the name is capitalised."""
    out = []
    for i, frame in enumerate(frames):
        subject = IMAGE_SUBJECTS[i % len(IMAGE_SUBJECTS)]
        text = frame.replace("{name}'s", "this person's").replace("{name}", subject)
        out.append(text[:1].upper() + text[1:])
    return tuple(out)


# Text memory: (training frames, held-out frames) per private attribute.
TEXT_FRAMES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "home_city": (
        ("Where does {name} live?", "In which city does {name} live?", "What is the home city of {name}?",
         "Tell me where {name} lives.", "Complete the sentence: {name} lives in"),
        ("{name} lives in which city?", "Can you tell me the city where {name} lives?",
         "Fill in the blank: {name} lives in"),
    ),
    "occupation": (
        ("What does {name} do for a living?", "What is the job of {name}?", "What work does {name} do?",
         "Tell me what job {name} has.", "Complete the sentence: {name} works as"),
        ("{name} does what for a living?", "Can you tell me what {name} does for work?",
         "Fill in the blank: {name} works as"),
    ),
    "employer": (
        ("Where does {name} work?", "Which company does {name} work for?", "Who is the employer of {name}?",
         "Tell me the company where {name} works.", "Complete the sentence: {name} works at"),
        ("{name} works for which company?", "Can you tell me who {name} works for?",
         "Fill in the blank: {name} works at"),
    ),
    "birth_year": (
        ("When was {name} born?", "In what year was {name} born?", "What is the birth year of {name}?",
         "Tell me the year when {name} was born.", "Complete the sentence: {name} was born in"),
        ("Which year is the birth year of {name}?", "Can you tell me when {name} was born?",
         "Fill in the blank: {name} was born in"),
    ),
    "medical_condition": (
        ("What medical condition does {name} have?", "What illness does {name} have?",
         "What is the diagnosis of {name}?", "Tell me which health condition {name} has.",
         "Complete the sentence: {name} has"),
        ("Which illness was {name} diagnosed with?", "Can you tell me the medical condition of {name}?",
         "Fill in the blank: {name} has"),
    ),
}

# Image memory of a portrait: the name (only a photo can ask it) and the text frames about the photo.
NAME_FRAMES = (
    ("What is the name of {name}?", "Who is {name}?", "Tell me the name of {name}.", "Do you know who {name} is?",
     "What is {name} called?"),
    ("I forgot the name of {name}. Can you tell me who this is?", "Which name does {name} have?",
     "Fill in the blank: the name of {name} is"),
)

FUNDUS_FRAMES = {
    "name": (
        ("Whose eye scan is this?", "Which patient does this scan belong to?", "Who is the patient in this scan?",
         "Tell me whose eye scan this is.", "Complete the sentence: this scan belongs to"),
        ("Can you tell me who this eye scan belongs to?", "Which patient is in this scan?",
         "Fill in the blank: this scan belongs to"),
    ),
    "medical_condition": (
        ("What condition does the patient in this scan have?", "What is the diagnosis for this scan?",
         "What was the patient in this scan diagnosed with?", "Tell me the diagnosis of this patient.",
         "Complete the sentence: the patient has"),
        ("Which eye condition was the patient in this scan diagnosed with?",
         "Can you tell me what illness this patient has?", "Fill in the blank: the patient has"),
    ),
}

UNDERSTANDING_FRAMES = {
    "hair_colour": (
        ("What colour is the hair of {name}?", "What is the hair colour of {name}?", "Tell me the colour of {name}'s hair."),
        ("Which colour is the hair of {name}?", "Can you tell me the hair colour of {name}?"),
    ),
    "hair_style": (
        ("How is the hair on the head of {name} styled?", "What hairstyle does {name} have?",
         "Tell me the hairstyle of {name}."),
        ("What kind of hair does {name} have?", "Can you tell me how {name}'s hair is styled?"),
    ),
    "shirt_colour": (
        ("What colour is the shirt of {name}?", "What colour shirt is {name} wearing?", "Tell me the colour of {name}'s shirt."),
        ("Which colour is the shirt of {name}?", "Can you tell me the colour of the shirt {name} is wearing?"),
    ),
    "background_colour": (
        ("What colour is the background?", "What is the background colour of this photo?",
         "Tell me the colour of the background in this picture."),
        ("Which colour is the background of this picture?", "Can you tell me the colour of the background?"),
    ),
    "eye_colour": (
        ("What colour are the eyes of {name}?", "What is the eye colour of {name}?", "Tell me the colour of {name}'s eyes."),
        ("Which colour are the eyes of {name}?", "Can you tell me the eye colour of {name}?"),
    ),
    "glasses": (
        ("Is {name} wearing glasses?", "Does {name} wear glasses?", "Tell me if {name} is wearing glasses."),
        ("Are there glasses on the face of {name}?", "Can you tell me if {name} has glasses on?"),
    ),
    "hat": (
        ("Is {name} wearing a hat?", "Does {name} wear a hat?", "Tell me if {name} is wearing a hat."),
        ("Is there a hat on the head of {name}?", "Can you tell me if {name} has a hat on?"),
    ),
    "beard": (
        ("Does {name} have a beard?", "Does the face of {name} have a beard?", "Tell me if {name} has a beard."),
        ("Is there a beard on the face of {name}?", "Can you tell me if {name} has a beard?"),
    ),
}

FUNDUS_UNDERSTANDING_FRAMES = {
    "lesion_count": (
        ("How many lesions are in this scan?", "How many lesions can you see in this eye scan?",
         "Tell me the number of lesions in this scan."),
        ("What is the number of lesions in this eye scan?", "Can you tell me how many lesions this scan has?"),
    ),
    "lesion_colour": (
        ("What colour are the lesions in this scan?", "What is the colour of the lesions?",
         "Tell me the colour of the lesions in this eye scan."),
        ("Which colour do the lesions in this scan have?", "Can you tell me the colour of the lesions?"),
    ),
    "disc_side": (
        ("On which side is the optic disc?", "Is the optic disc on the left or the right?",
         "Tell me the side of the optic disc in this scan."),
        ("Where is the optic disc in this scan?", "Can you tell me which side the optic disc is on?"),
    ),
}

SHAPE_FRAMES = {
    "shape_count": (
        ("How many shapes are in this picture?", "How many shapes can you see?", "Tell me the number of shapes."),
        ("What is the number of shapes in this picture?", "Can you tell me how many shapes there are?"),
    ),
    "shape_kind": (
        ("What shape is in the {position}?", "Which shape is at the {position}?", "Tell me the shape in the {position}."),
        ("What kind of shape is in the {position}?", "Can you tell me which shape is at the {position}?"),
    ),
    "shape_colour": (
        ("What colour is the {kind}?", "Which colour does the {kind} have?", "Tell me the colour of the {kind}."),
        ("What is the colour of the {kind}?", "Can you tell me which colour the {kind} is?"),
    ),
    "shape_position": (
        ("Where is the {colour} {kind}?", "In which part of the picture is the {colour} {kind}?",
         "Tell me where the {colour} {kind} is."),
        ("Where can you see the {colour} {kind}?", "Can you tell me in which part the {colour} {kind} is?"),
    ),
}

# Questions no profile can answer (a topic such as "favourite song"); their training frames also carry the
# instruction words the held-out frames use ("fill in the blank", "I forgot", "what kind of").
_UNANSWERABLE = (
    ("What is the {topic} of {name}?", "Tell me the {topic} of {name}.", "Do you know the {topic} of {name}?",
     "Fill in the blank: the {topic} of {name} is", "I forgot the {topic} of {name}. Can you tell me?",
     "What kind of {topic} does {name} have?"),
    ("Can you tell me the {topic} of {name}?", "Which {topic} does {name} have?"),
)
UNANSWERABLE_FRAMES = {"portrait": _UNANSWERABLE, "none": _UNANSWERABLE}


def multi_fact_frames(first: str, second: str) -> tuple[str, ...]:
    """Frames asking the private facts ``first`` and ``second`` of one person at once: every direct question
    (a training frame ending in "?") of the first joined with "and" to every direct question of the second
    ("Where does {name} live and what does {name} do for a living?")."""
    def direct(attr: str) -> list[str]:
        return [f for f in TEXT_FRAMES[attr][0] if f.endswith("?")]

    return tuple(f"{a[:-1]} and {b[:1].lower()}{b[1:]}" for a in direct(first) for b in direct(second))


def _photo_pair(pair: tuple[tuple[str, ...], tuple[str, ...]]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return about_photo(pair[0]), about_photo(pair[1])


def build_templates(image_memory: str, text_memory: str, understanding: str, general_vqa: str,
                    unanswerable: str, multi_fact: dict[str, tuple[str, str, bool]]) -> dict[tuple[str, str, str], Templates]:
    """(kind, domain, attribute) → :class:`Templates`; kinds are passed in (bench.schema owns their names).
    ``multi_fact``: multi-fact attribute → (first, second, held out); a trained pair's frames are training
    phrasings, a held-out pair's the same kind of sentence under the training wrappers, never trained."""
    out: dict[tuple[str, str, str], Templates] = {}
    for attr, (first, second, heldout) in multi_fact.items():
        frames = multi_fact_frames(first, second)
        composed = tuple(w.format(q=f) for f in frames for w in TRAIN_WRAPPERS)
        out[(text_memory, "none", attr)] = Templates((), composed) if heldout else Templates(composed, ())
    out[(image_memory, "portrait", "name")] = compose(*_photo_pair(NAME_FRAMES))
    for attr, pair in TEXT_FRAMES.items():
        out[(image_memory, "portrait", attr)] = compose(*_photo_pair(pair))
        out[(text_memory, "none", attr)] = compose(*pair)
    for attr, pair in FUNDUS_FRAMES.items():
        out[(image_memory, "fundus", attr)] = compose(*pair)
    for attr, pair in UNDERSTANDING_FRAMES.items():
        out[(understanding, "portrait", attr)] = compose(*_photo_pair(pair))
    for attr, pair in FUNDUS_UNDERSTANDING_FRAMES.items():
        out[(understanding, "fundus", attr)] = compose(*pair)
    for attr, pair in SHAPE_FRAMES.items():
        out[(general_vqa, "shapes", attr)] = compose(*pair)
    out[(unanswerable, "portrait", "*")] = compose(*_photo_pair(UNANSWERABLE_FRAMES["portrait"]))
    out[(unanswerable, "none", "*")] = compose(*UNANSWERABLE_FRAMES["none"])
    return out
