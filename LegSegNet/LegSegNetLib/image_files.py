"""Image files (NIfTI, NRRD, MHA): checks on the stored bytes that ITK's readers do not make."""
import gzip
import struct

import numpy as np


NIFTI_FLOATS = {16: np.float32, 64: np.float64}   # NIfTI-1 datatype codes


def nifti_has_nan(path, chunk=1 << 24):
    """ITK's NIfTI reader turns NaN into 0, which would pass as 0 HU: look at the stored floats ourselves."""
    with (gzip.open if path.lower().endswith(".gz") else open)(path, "rb") as f:
        header = f.read(348)
        if len(header) < 348:
            return False
        endian = "<" if struct.unpack("<i", header[:4])[0] == 348 else ">"
        datatype = struct.unpack(endian + "h", header[70:72])[0]
        if datatype not in NIFTI_FLOATS:          # integer voxels (most CT) cannot hold NaN
            return False
        f.seek(int(struct.unpack(endian + "f", header[108:112])[0]))
        dtype = np.dtype(NIFTI_FLOATS[datatype]).newbyteorder(endian)
        while block := f.read(chunk - chunk % dtype.itemsize):
            if np.isnan(np.frombuffer(block[:len(block) - len(block) % dtype.itemsize], dtype)).any():
                return True
    return False
