"""Our segment terminology (Slicer's .term.json), generated from the tissue table and shipped in Resources/."""
import json
import os
from pathlib import Path

from .tissues import SIDE_MODIFIERS, TERMINOLOGY_CONTEXT, TISSUES, segment_name

TERMINOLOGY_FILE = (Path(__file__).resolve().parent.parent / "Resources"
                    / "SegmentationCategoryTypeModifier-LegSegNet.term.json")


def terminology_document():
    """Our terminology context (Slicer's .term.json schema), generated from the tissue table."""
    categories = {}
    for tissue in TISSUES:
        category = categories.setdefault(tissue.category.value, {
            **_code(tissue.category),   # anatomy selectable where a tissue of the category has a region
            "showAnatomy": any(t.region.value for t in TISSUES if t.category == tissue.category), "Type": []})
        modifiers = [{**_code(code), "recommendedDisplayRGBValue": list(tissue.color),
                      "3dSlicerLabel": segment_name(tissue, side)} for side, code in SIDE_MODIFIERS.items()]
        category["Type"].append({**_code(tissue.type), "recommendedDisplayRGBValue": list(tissue.color),
                                 "3dSlicerLabel": segment_name(tissue), "Modifier": modifiers})
    return {"SegmentationCategoryTypeContextName": TERMINOLOGY_CONTEXT,
            "@schema": "https://raw.githubusercontent.com/qiicr/dcmqi/master/doc/schemas/segment-context-schema.json#",
            "SegmentationCodes": {"Category": list(categories.values())}}


def _code(code):
    return {"CodingSchemeDesignator": code.scheme, "CodeValue": code.value, "CodeMeaning": code.meaning}


def write_terminology(path=TERMINOLOGY_FILE):
    """Regenerate the shipped .term.json from the tissue table."""
    Path(path).write_text(json.dumps(terminology_document(), indent=2) + "\n", encoding="utf-8")


def load_terminology(terminologies_logic, path=TERMINOLOGY_FILE):
    """Load our context into Slicer's terminologies logic; returns the context name."""
    name = terminologies_logic.LoadTerminologyFromFile(os.fspath(path))
    if name != TERMINOLOGY_CONTEXT:
        raise RuntimeError(f"{path}: loaded as '{name}', expected '{TERMINOLOGY_CONTEXT}'")
    return name
