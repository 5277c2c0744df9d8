"""Engine choice. Every engine turns a canonical HU array (z, y, x) into uint8 tissue labels:
    engine.segment(hu, spacing, progress=None, cancel=None) -> labels;  engine.report() -> dict
"""
from .classical import ClassicalEngine
from .errors import InputError

ENGINES = ("auto", "threshold")


def make_engine(name="auto"):
    """The engine and why it was chosen."""
    if name not in ENGINES:
        raise InputError(f"unknown engine '{name}' (choose from {', '.join(ENGINES)})")
    if name == "threshold":
        return ClassicalEngine(), "requested"
    return ClassicalEngine(), "no network weights installed; using the classical engine"
