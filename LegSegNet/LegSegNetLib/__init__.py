"""LegSegNet core: lower-extremity CT tissue segmentation and quantification, importable without Slicer."""
__version__ = "0.1.0"
