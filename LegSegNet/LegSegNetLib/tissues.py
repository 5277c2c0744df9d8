"""The tissue table: the one place that states labels, names, colours and terminology codes."""
from dataclasses import dataclass

TERMINOLOGY_CONTEXT = "LegSegNet - lower extremity tissues"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"


@dataclass(frozen=True)
class Code:
    scheme: str
    value: str
    meaning: str

    def __str__(self):
        return f"{self.scheme}^{self.value}^{self.meaning}"


NO_CODE = Code("", "", "")


@dataclass(frozen=True)
class Tissue:
    label: int
    short: str            # segment name and column prefix
    name: str
    color: tuple          # RGB 0..255
    category: Code
    type: Code
    region: Code = NO_CODE

    @property
    def color_float(self):
        return tuple(c / 255.0 for c in self.color)


TISSUE = Code("SCT", "85756007", "Tissue")
ANATOMICAL_STRUCTURE = Code("SCT", "123037004", "Anatomical Structure")

TISSUES = (
    Tissue(1, "SAT", "subcutaneous adipose tissue", (139, 35, 35),
           TISSUE, Code("SCT", "67769002", "Subcutaneous fatty tissue")),
    Tissue(2, "SM", "skeletal muscle", (70, 105, 150),
           ANATOMICAL_STRUCTURE, Code("SCT", "127954009", "Skeletal muscle")),
    Tissue(3, "IMAT", "inter/intramuscular adipose tissue", (210, 120, 30),
           ANATOMICAL_STRUCTURE, Code("SCT", "55603005", "Fat"), Code("SCT", "71616004", "Muscle")),
    Tissue(4, "Bone", "bone (cortex and marrow)", (240, 210, 120),
           TISSUE, Code("SCT", "272673000", "Bone")),
)

BY_SHORT = {t.short: t for t in TISSUES}
# Names other label sets use for our tissues (the published model says "IAT" for IMAT).
ALIASES = {"IAT": "IMAT", "IMF": "IMAT", "BONE": "Bone"}

# Legs; the modifiers are used when segments are split by side.
SIDE_MODIFIERS = {"left": Code("SCT", "7771000", "Left"), "right": Code("SCT", "24028007", "Right")}
SIDE_LABELS = {"right": 1, "left": 2}   # values of the side map returned by sides.split_legs
LEGS = ("both", "left", "right")         # rows of every per-leg table


def tissue_for_name(name):
    """The tissue a label name refers to (case-insensitive, aliases allowed), or None."""
    key = name.strip()
    for candidate in (key, key.upper(), ALIASES.get(key.upper(), "")):
        for t in TISSUES:
            if t.short.upper() == candidate.upper():
                return t
    return None


def terminology_entry(tissue, side=None):
    """Slicer's terminology entry string (context~category~type~modifier~anatomicContext~region~regionModifier)."""
    modifier = SIDE_MODIFIERS[side] if side in SIDE_MODIFIERS else NO_CODE
    return "~".join([TERMINOLOGY_CONTEXT, str(tissue.category), str(tissue.type), str(modifier),
                     ANATOMIC_CONTEXT, str(tissue.region), str(NO_CODE)])


def segment_name(tissue, side=None):
    """A segment's name: the tissue's short name, with the leg when segments are split by side."""
    return f"{tissue.short} {side}" if side else tissue.short
