"""How large a CT may be: checked from headers alone, before any voxel is read (image files and DICOM series)."""
import numpy as np

from .errors import InputError

MAX_VOXELS = 2 ** 30   # 512×512×4096: a whole-body CT at 0.5 mm slices; larger is not one CT of the legs
# Memory a segment run needs beside the image itself (labels, side map, engine masks): measured 1.68 GiB for
# 512×512×1000 int16 voxels, about 2 + 4.9 bytes a voxel.
WORKING_BYTES_PER_VOXEL = 5


def check_size(name, size, bytes_per_voxel):
    """Refuse a volume of this size (voxels per axis) beyond MAX_VOXELS or beyond the memory available."""
    voxels = int(np.prod(size, dtype=object))
    if voxels > MAX_VOXELS:
        raise InputError(f"{name}: size {tuple(size)} is {voxels} voxels, more than the limit of {MAX_VOXELS}")
    needed, available = voxels * (bytes_per_voxel + WORKING_BYTES_PER_VOXEL), available_memory()
    if available is not None and needed > available:
        raise InputError(f"{name}: size {tuple(size)} needs about {needed / 2 ** 30:.1f} GiB of memory; "
                         f"{available / 2 ** 30:.1f} GiB is available")


def available_memory():
    """MemAvailable in bytes, or None where /proc/meminfo does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
