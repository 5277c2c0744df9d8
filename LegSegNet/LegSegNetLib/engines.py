"""Engine choice. Every engine turns a canonical HU array (z, y, x) into uint8 tissue labels:
    engine.segment(hu, spacing, progress=None, cancel=None) -> labels;  engine.report() -> dict
"""
from .classical import ClassicalEngine
from .errors import InputError

ENGINES = ("auto", "threshold", "nnunet")


def make_engine(name="auto", model=None, **network_options):
    """The engine and why it was chosen. network_options go to nnunet.NnUNetEngine (device, precision,
    mirroring, accumulation, ...). auto: the network when weights are found (--model, LEGSEGNET_MODEL, the
    downloaded cache) and torch is installed, else the classical engine."""
    if name not in ENGINES:
        raise InputError(f"unknown engine '{name}' (choose from {', '.join(ENGINES)})")
    if name == "threshold":
        return ClassicalEngine(), "requested"
    from .weights import HOW_TO_GET, locate
    folder, source = locate(model)
    if folder is None:
        if name == "nnunet":
            raise InputError(f"the nnunet engine needs network weights: {HOW_TO_GET}")
        return ClassicalEngine(), f"{source}; using the classical engine ({HOW_TO_GET})"
    if name == "auto" and not _torch_available():
        return ClassicalEngine(), f"weights found ({source}) but torch is not installed; using the classical engine"
    from .nnunet import NnUNetEngine
    from .weights import MANIFEST, verify
    if (folder / MANIFEST).is_file():
        verify(folder)         # downloaded weights: refuse corrupted files before loading anything
    engine = NnUNetEngine(folder, **network_options)
    return engine, "requested" if name == "nnunet" else f"network weights found ({source})"


def _torch_available():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True
