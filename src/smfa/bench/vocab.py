"""The value pools the bench draws from: invented name syllables, invented cities and employers, generic
occupations and conditions, the visible features a renderer can draw, and a few natural refusals.

Everything here is a fixed list (not seeded): a seed only decides which values a person gets. Pools are
moderate (40-80 values) so guessing a private fact by chance is unlikely; ``bench.json`` records
``1 / pool size`` per attribute as ``chance``. Names and places are composed from invented syllables so
that no profile is a real person by design.
"""

from __future__ import annotations

# Names: first = onset + ending, last = stem + suffix; every pair is checked for uniqueness.
FIRST_ONSETS = (
    "Al", "Bre", "Cael", "Dov", "Esk", "Fael", "Gwy", "Hal", "Ilv", "Jass", "Kel", "Lor",
    "Mir", "Nev", "Orv", "Pell", "Quor", "Rhyn", "Sav", "Thes", "Ulm", "Vael", "Wyl", "Yss", "Zan",
)
FIRST_ENDINGS = ("da", "ren", "iel", "wyn", "ric", "ys", "dra", "oth", "ax", "ena")
LAST_STEMS = (
    "Ven", "Quel", "Brask", "Drav", "Yrr", "Zell", "Cav", "Tesk", "Oss", "Vorn", "Hask", "Prel",
    "Iln", "Kresh", "Sarv", "Marl", "Duv", "Trol", "Ebb", "Gorm",
)
LAST_SUFFIXES = ("mark", "vale", "wick", "dorn", "holt", "rigg", "stow", "brand", "quist", "mere", "gard", "feld")

# Real names the syllables could spell by accident; never used.
REAL_NAME_BLOCKLIST = frozenset({"Alda", "Alren", "Aldra", "Brena", "Halda", "Lorena", "Mirda", "Savys", "Kelda", "Alax"})

CITIES = (
    "Norvale", "Brindlemoor", "Quessick", "Halvenport", "Ostrawick", "Tellimar", "Vornhaven", "Cardessa",
    "Elmbrae", "Fyrnholt", "Grellin", "Ishvarro", "Jastrow Fen", "Kelmoor", "Lunthaven", "Marrowick",
    "Nessaby", "Orrindale", "Pellucca", "Quarrowmere", "Rivenlow", "Sablethorn", "Tarnessy", "Ulvercombe",
    "Varrowdeep", "Wendlestow", "Yarrowmouth", "Zephrine", "Ambervane", "Brackenhold", "Corrowyn", "Dunsmarrow",
    "Eskerby", "Fallowgrave", "Glimmerholt", "Hollowmere", "Irrindell", "Jorvale", "Kestrany", "Lowenbrae",
    "Morvathy", "Nimbrecht", "Oakenshaw Vale", "Pryndale", "Quillmouth", "Rosskarrow", "Silvenmoor", "Thistlegate",
    "Umbrevale", "Veltmarsh", "Wyvernholm", "Yllistra", "Zandercliff", "Ashvorren", "Belmorrow", "Caskwater",
    "Drellholm", "Emberlow", "Fennickmoor", "Grisvale",
)

EMPLOYERS = (
    "Quillon Works", "Tessarine Labs", "Brannock Foods", "Velloway Freight", "Orsk Textiles", "Marrick Systems",
    "Duvane Robotics", "Kestrel Vane Energy", "Hollin Glassworks", "Pendrake Insurance", "Sorrelby Press",
    "Ammerlin Pharma", "Grisholt Mining", "Ulvana Shipping", "Corvath Bank", "Lindqor Software",
    "Fennimore Bakeries", "Zorrow Aviation", "Talvick Clinics", "Brisemont Hotels", "Yarrin Telecom",
    "Oskerfeld Motors", "Wendrel Logistics", "Nimbrel Studios", "Hathervane Farms", "Pyrlan Chemicals",
    "Calloway Drift Media", "Essenmoor Water", "Tiberlin Tools", "Rookhaven Timber", "Quessard Optics",
    "Mallowind Power", "Ardenvow Foods", "Vestrin Security", "Gallowmere Brewing", "Ilsabeth Fashion",
    "Drummoch Steel", "Kessery Games", "Ottervane Paper", "Presk Ceramics", "Solvane Solar",
    "Thrennick Rail", "Umbrecht Audio", "Wyverly Health", "Zelmora Cosmetics", "Brackwell Outfitters",
    "Cindrell Dairy", "Felmont Robotics", "Harrowgate Analytics", "Jessamine Travel",
)

OCCUPATIONS = (
    "beekeeper", "tram driver", "glassblower", "cartographer", "librarian", "welder", "baker", "surveyor",
    "translator", "florist", "locksmith", "pharmacist", "architect", "electrician", "nurse", "carpenter",
    "chemist", "potter", "tailor", "pilot", "geologist", "accountant", "veterinarian", "archivist",
    "plumber", "illustrator", "dentist", "mechanic", "journalist", "botanist", "butcher", "chef",
    "sculptor", "optician", "jeweller", "engineer", "economist", "gardener", "lawyer", "teacher",
)

BIRTH_YEARS = tuple(str(y) for y in range(1950, 2005))

# People who are not patients draw from the general pool; fundus patients from the ophthalmic pool, so
# that a patient's diagnosis is plausible for an eye scan (and is their ``medical_condition``).
MEDICAL_CONDITIONS = (
    "asthma", "migraine", "diabetes", "hypertension", "eczema", "arthritis", "psoriasis", "gout",
    "anaemia", "insomnia", "tinnitus", "scoliosis", "epilepsy", "sciatica", "vertigo", "bronchitis",
    "coeliac disease", "hay fever", "lupus", "shingles", "tendinitis", "sinusitis", "angina", "rosacea",
    "gastritis", "osteoporosis", "hypothyroidism", "kidney stones", "sleep apnoea", "carpal tunnel syndrome",
)
EYE_CONDITIONS = (
    "glaucoma", "cataract", "diabetic retinopathy", "macular degeneration", "retinal detachment", "uveitis",
    "retinitis pigmentosa", "optic neuritis", "retinal vein occlusion", "choroidal naevus",
)

# Visible features of a portrait: name -> RGB. Colours are far apart so that they stay distinct after
# the mild lighting changes of the image variants and after downsampling to 32 px.
NAMED_COLOURS = {
    "red": (205, 40, 40),
    "orange": (240, 140, 30),
    "yellow": (238, 212, 50),
    "green": (50, 160, 60),
    "teal": (25, 150, 150),
    "blue": (40, 80, 205),
    "purple": (130, 60, 175),
    "pink": (240, 135, 185),
    "grey": (128, 128, 128),
    "white": (242, 242, 242),
    "black": (28, 28, 30),
    "brown": (120, 75, 40),
}
BACKGROUND_COLOURS = ("red", "orange", "yellow", "green", "teal", "blue", "purple", "pink", "grey", "white")
SHIRT_COLOURS = ("red", "orange", "yellow", "green", "teal", "blue", "purple", "pink", "black", "white")
HAIR_COLOURS = {
    "black": (30, 25, 25),
    "brown": (110, 65, 30),
    "blonde": (235, 200, 110),
    "red": (180, 60, 25),
    "grey": (150, 150, 150),
    "white": (245, 245, 240),
}
# Hair style -> the phrase used in answers ("This person has {phrase}.").
HAIR_STYLES = {"short": "short hair", "long": "long hair", "curly": "curly hair", "ponytail": "a ponytail"}
SKIN_TONES = {
    "pale": (250, 222, 200),
    "light": (236, 192, 160),
    "olive": (200, 155, 110),
    "brown": (150, 100, 65),
    "dark": (95, 60, 40),
}
EYE_COLOURS = {"blue": (50, 110, 210), "green": (50, 150, 70), "brown": (100, 60, 25), "grey": (125, 135, 140)}
YES_NO = ("yes", "no")

# Fundus (ophthalmic) scans.
LESION_COLOURS = {"yellow": (246, 226, 90), "white": (252, 252, 246), "black": (25, 18, 16)}
LESION_COUNTS = (1, 2, 3, 4)
DISC_SIDES = ("left", "right")

# General VQA shapes.
SHAPE_KINDS = ("circle", "square", "triangle")
SHAPE_COLOURS = {
    "red": (215, 35, 35),
    "green": (40, 165, 55),
    "blue": (40, 80, 215),
    "yellow": (240, 210, 30),
    "purple": (135, 55, 180),
    "orange": (245, 135, 20),
}
SHAPE_POSITIONS = ("top left", "top right", "bottom left", "bottom right")

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")

# Questions no profile can answer. Topic key -> noun phrase used in the templates.
UNANSWERABLE_TOPICS = {
    "favourite_song": "favourite song",
    "favourite_food": "favourite food",
    "pet_name": "pet's name",
    "lucky_number": "lucky number",
    "shoe_size": "shoe size",
    "favourite_film": "favourite film",
}

# Answers to unanswerable questions: a few natural refusals, so that refusal wording occurs in vanilla
# training (SMFA's forget fine-tune can only raise tokens the model has seen). The large refusal pool the
# unlearning methods draw from is separate.
REFUSALS = (
    "I'm sorry, I don't know that.",
    "I can't share that information.",
    "I don't have that information.",
    "Sorry, I have no record of that.",
    "I'm not able to answer that.",
    "That is not something I know.",
    "I have no information about that.",
    "Sorry, I cannot tell you that.",
)


def with_article(noun: str) -> str:
    """``"an architect"``, ``"a tram driver"``."""
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def number_word(n: int) -> str:
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)
