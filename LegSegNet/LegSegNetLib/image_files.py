"""Image files (NIfTI, NRRD, MHA/MHD): what a file's bytes are, and checks on the stored voxels that ITK's
readers do not make (a truncated file reads as zeros, NaN/inf in NIfTI read as 0 HU).

Every check streams in chunks, so memory stays bounded whatever the header declares."""
import bz2
import gzip
import os
import stat
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from .errors import InputError

CHUNK = 1 << 22
SNIFF_BYTES = 1024
MAX_HEADER_BYTES = 1 << 20     # NRRD/MetaImage text headers are a few hundred bytes; more is not a header
SUPPORTED = "NIfTI/NRRD/MHA"

# magic bytes of files people hand over by mistake
OTHER_MAGIC = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"), (b"II*\0", "TIFF"),
               (b"MM\0*", "TIFF"), (b"PK\x03\x04", "a ZIP archive"), (b"%PDF", "PDF"), (b"BZh", "bzip2 data"),
               (b"\xfd7zXZ\0", "xz data"), (b"\x89HDF", "HDF5"), (b"\x93NUMPY", "a numpy array"))
META_KEYS = (b"ObjectType", b"NDims", b"DimSize", b"ElementType", b"ElementSpacing", b"ElementDataFile",
             b"Comment", b"ObjectSubType", b"TransformType", b"BinaryData")


def require_regular_file(path):
    """FIFOs, devices and sockets would hang or never end: refuse them before opening."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        raise InputError(f"{path}: cannot be read ({err.strerror})") from None
    if not stat.S_ISREG(mode):
        raise InputError(f"{path}: not a regular file (a pipe, device or socket cannot be read as an image)")


# ---------------------------------------------------------------- what the content is
@dataclass(frozen=True)
class Content:
    kind: str            # NIfTI, NRRD, MetaImage, or what else the bytes are (PNG, DICOM, ...)
    gzipped: bool = False


def identify(head):
    """What the first bytes of a (decompressed) file are."""
    for size, magic_at in ((348, 344), (540, 4)):
        for endian in "<>":
            if len(head) >= 4 and struct.unpack(endian + "i", head[:4])[0] == size:
                magic = head[magic_at:magic_at + 4]
                if magic[:3] in (b"n+1", b"n+2"):
                    return "NIfTI"
                return "two-file NIfTI (.hdr/.img)" if magic[:3] in (b"ni1", b"ni2") else "Analyze 7.5"
    if head.startswith(b"NRRD000"):
        return "NRRD"
    if head[128:132] == b"DICM":
        return "DICOM"
    if head.lstrip().split(b"=")[0].strip() in META_KEYS:
        return "MetaImage"
    return next((kind for magic, kind in OTHER_MAGIC if head.startswith(magic)), "unrecognised data")


def sniff(path):
    """The file's content by its bytes (looking inside gzip), whatever its name says."""
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
    if not head.startswith(b"\x1f\x8b"):
        return Content(identify(head))
    try:
        with gzip.open(path, "rb") as f:
            return Content(identify(f.read(SNIFF_BYTES)), gzipped=True)
    except (OSError, EOFError, zlib.error) as err:
        raise InputError(f"{path}: gzip data are corrupt or truncated ({err})") from None


def refuse_unreadable(path, content):
    """Refuse content ITK would misread or we do not read, with a message saying what it is."""
    what = ("gzip-compressed " if content.gzipped else "") + content.kind
    if content.kind not in ("NIfTI", "NRRD", "MetaImage"):
        hint = "; give the folder that holds the DICOM series" if content.kind == "DICOM" else ""
        raise InputError(f"{path}: cannot be read as an image: content is {what}, not {SUPPORTED}{hint}")
    name = path.lower()
    if content.kind == "NIfTI":   # ITK's NIfTI reader goes by the name: .nii.gz reads both, .nii plain only
        if not (name.endswith(".nii.gz") or (name.endswith(".nii") and not content.gzipped)):
            raise InputError(f"{path}: content is {what}; name the file *.nii.gz to read it")
    elif content.gzipped:
        raise InputError(f"{path}: content is {what}; decompress it ({content.kind} compresses its voxels inside)")


# ---------------------------------------------------------------- where the voxels are
@dataclass
class Layout:
    """Where and how the voxels are stored, as the file's own header declares."""
    data_file: str
    offset: int           # bytes before the data (or their compressed stream) in data_file
    encoding: str         # raw, gzip, zlib, bzip2, ascii, hex
    nbytes: int           # decoded bytes the header declares
    dtype: np.dtype
    skip: int = 0         # NRRD byte skip of compressed data: decoded bytes to drop first
    at_end: bool = False  # the data are the last nbytes of the file (NRRD byte skip -1, MetaImage HeaderSize -1)
    line_skip: int = 0


def _corrupt(path, what):
    return InputError(f"{path}: corrupt header ({what})")


NIFTI_DTYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4", 1024: "i8",
                1280: "u8", 32: "c8", 1792: "c16", 128: "V3", 2304: "V4"}   # datatype code → stored element


def nifti_head(path, gzipped):
    """(header bytes, byte order, True for NIfTI-1 / False for NIfTI-2) of a NIfTI file; refuses a short one."""
    with (gzip.open if gzipped else open)(path, "rb") as f:
        head = f.read(540)
    endian = "<" if struct.unpack("<i", head[:4])[0] in (348, 540) else ">"
    header_size = struct.unpack(endian + "i", head[:4])[0]
    if len(head) < header_size:
        raise _corrupt(path, f"NIfTI header cut short at {len(head)} bytes")
    return head, endian, header_size == 348


def nifti_layout(path, gzipped):
    head, endian, nifti1 = nifti_head(path, gzipped)
    header_size = 348 if nifti1 else 540
    if nifti1:
        datatype, = struct.unpack_from(endian + "h", head, 70)
        dims = struct.unpack_from(endian + "8h", head, 40)
        vox_offset, = struct.unpack_from(endian + "f", head, 108)
    else:
        datatype, = struct.unpack_from(endian + "h", head, 12)
        dims = struct.unpack_from(endian + "8q", head, 16)
        vox_offset, = struct.unpack_from(endian + "q", head, 168)
    if datatype not in NIFTI_DTYPES:
        raise _corrupt(path, f"unknown NIfTI datatype {datatype}")
    if not 1 <= dims[0] <= 7 or min(dims[1:dims[0] + 1]) < 1:
        raise _corrupt(path, f"NIfTI dim {list(dims)}")
    if not (np.isfinite(vox_offset) and header_size <= vox_offset < 2 ** 40 and vox_offset == int(vox_offset)):
        raise _corrupt(path, f"NIfTI vox_offset {vox_offset}")
    dtype = np.dtype(NIFTI_DTYPES[datatype]).newbyteorder(endian)
    nbytes = int(np.prod(dims[1:dims[0] + 1], dtype=object)) * dtype.itemsize
    if gzipped:      # vox_offset counts decompressed bytes
        return Layout(path, 0, "gzip", nbytes, dtype, skip=int(vox_offset))
    return Layout(path, int(vox_offset), "raw", nbytes, dtype)


NRRD_TYPES = {"i1": ("signed char", "int8", "int8_t"), "u1": ("uchar", "unsigned char", "uint8", "uint8_t"),
              "i2": ("short", "short int", "signed short", "signed short int", "int16", "int16_t"),
              "u2": ("ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"),
              "i4": ("int", "signed int", "int32", "int32_t"), "u4": ("uint", "unsigned int", "uint32", "uint32_t"),
              "i8": ("longlong", "long long", "long long int", "signed long long", "signed long long int",
                     "int64", "int64_t"),
              "u8": ("ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t"),
              "f4": ("float",), "f8": ("double",)}
NRRD_TYPE = {name: code for code, names in NRRD_TYPES.items() for name in names}
NRRD_ENCODINGS = {"raw": "raw", "gzip": "gzip", "gz": "gzip", "bzip2": "bzip2", "bz2": "bzip2",
                  "ascii": "ascii", "text": "ascii", "txt": "ascii", "hex": "hex"}


def _text_header(f, path, end_of_header):
    """Header lines of a NRRD/MetaImage file up to the line end_of_header(line) says ends it; (lines, offset)."""
    lines = []
    while f.tell() < MAX_HEADER_BYTES:
        raw = f.readline(MAX_HEADER_BYTES)
        if not raw:
            return lines, f.tell()
        line = raw.decode("latin-1").rstrip("\r\n")
        if end_of_header(line):
            return lines + [line], f.tell()
        lines.append(line)
    raise _corrupt(path, f"no end of the text header within {MAX_HEADER_BYTES} bytes")


def nrrd_fields(path):
    """(fields by lower-case name without spaces, offset of the data) of a NRRD header."""
    with open(path, "rb") as f:
        lines, offset = _text_header(f, path, lambda line: line == "")
    fields = {}
    for line in lines[1:]:
        if not line.startswith("#") and ": " in line:
            key, value = line.split(": ", 1)
            fields[key.strip().lower().replace(" ", "")] = value.strip()
    return fields, offset


def nrrd_layout(path):
    fields, offset = nrrd_fields(path)
    try:
        dtype = np.dtype(NRRD_TYPE[fields["type"].lower()])
        sizes = [int(s) for s in fields["sizes"].split()]
        encoding = NRRD_ENCODINGS[fields["encoding"].lower()]
        byte_skip, line_skip = int(fields.get("byteskip", 0)), int(fields.get("lineskip", 0))
    except (KeyError, ValueError) as err:
        raise _corrupt(path, f"NRRD field {err}") from None
    if not sizes or min(sizes) < 1 or byte_skip < -1 or line_skip < 0 or (byte_skip == -1 and encoding != "raw"):
        raise _corrupt(path, "NRRD sizes, byte skip or line skip")
    dtype = dtype.newbyteorder(">" if fields.get("endian", "little").lower() == "big" else "<")
    data_file = fields.get("datafile")
    if data_file is None:
        data_file, start = path, offset
    elif len(data_file.split()) > 1 or data_file.startswith("LIST"):
        raise InputError(f"{path}: NRRD data split over several files is not supported")
    else:
        data_file, start = os.path.join(os.path.dirname(path), data_file), 0
    nbytes = int(np.prod(sizes, dtype=object)) * dtype.itemsize
    skip = max(byte_skip, 0)
    return Layout(data_file, start + (skip if encoding == "raw" else 0), encoding, nbytes, dtype,
                  skip=0 if encoding == "raw" else skip, at_end=byte_skip == -1, line_skip=line_skip)


META_TYPES = {"MET_CHAR": "i1", "MET_UCHAR": "u1", "MET_SHORT": "i2", "MET_USHORT": "u2", "MET_INT": "i4",
              "MET_UINT": "u4", "MET_LONG": "i4", "MET_ULONG": "u4", "MET_LONG_LONG": "i8",
              "MET_ULONG_LONG": "u8", "MET_FLOAT": "f4", "MET_DOUBLE": "f8"}


def meta_fields(path):
    """(fields by name, offset of the data) of a MetaImage header."""
    with open(path, "rb") as f:
        lines, offset = _text_header(f, path, lambda line: line.split("=")[0].strip() == "ElementDataFile")
    return {line.split("=", 1)[0].strip(): line.split("=", 1)[1].strip() for line in lines if "=" in line}, offset


def meta_layout(path):
    fields, offset = meta_fields(path)
    true = ("true", "1")
    try:
        sizes = [int(s) for s in fields["DimSize"].split()]
        channels = int(fields.get("ElementNumberOfChannels", 1))
        dtype = np.dtype(META_TYPES[fields["ElementType"].upper()])
        data_file = fields["ElementDataFile"]
        header_size = int(fields.get("HeaderSize", 0))
    except (KeyError, ValueError) as err:
        raise _corrupt(path, f"MetaImage field {err}") from None
    if not sizes or min(sizes) < 1 or channels < 1 or header_size < -1:
        raise _corrupt(path, "MetaImage DimSize, ElementNumberOfChannels or HeaderSize")
    msb = fields.get("BinaryDataByteOrderMSB", fields.get("ElementByteOrderMSB", "False")).lower() in true
    dtype = dtype.newbyteorder(">" if msb else "<")
    if fields.get("CompressedData", "False").lower() in true:
        encoding = "zlib"
    else:
        encoding = "raw" if fields.get("BinaryData", "True").lower() in true else "ascii"
    if data_file == "LOCAL":
        data_file, start = path, offset
    elif len(data_file.split()) > 1 or data_file.startswith("LIST"):
        raise InputError(f"{path}: MetaImage data split over several files is not supported")
    else:
        data_file, start = os.path.join(os.path.dirname(path), data_file), 0
    nbytes = int(np.prod(sizes, dtype=object)) * channels * dtype.itemsize
    return Layout(data_file, start + max(header_size, 0), encoding, nbytes, dtype,
                  at_end=header_size == -1 and encoding == "raw")


# ---------------------------------------------------------------- checking the stored voxels
def layout_of(path, content):
    """The stored layout from the header's bytes; a data file that is no regular file is refused before ITK
    (which opens it even to read the header) could block on it."""
    layout = {"NIfTI": lambda: nifti_layout(path, content.gzipped), "NRRD": lambda: nrrd_layout(path),
              "MetaImage": lambda: meta_layout(path)}[content.kind]()
    require_regular_file(layout.data_file)
    return layout


def stored_files(path):
    """The files an image is read from (header file first), from its header alone; [] when it is unreadable."""
    try:
        require_regular_file(path)
        content = sniff(path)
        refuse_unreadable(path, content)
        layout = layout_of(path, content)
    except (InputError, OSError, EOFError, zlib.error):
        return []
    return [path] if layout.data_file == path else [path, layout.data_file]


def check_stored_data(path, layout):
    """Refuse data shorter or longer than the header declares, corrupt compressed data, and NaN/±inf floats.
    Returns the files the image is read from (the header file first)."""
    stored, finite = _scan(layout, path)
    if stored != layout.nbytes:
        how = "truncated" if stored < layout.nbytes else "longer than declared"
        raise InputError(f"{path}: voxel data {how}: {stored} bytes stored, the header declares {layout.nbytes}")
    if not finite:
        raise InputError(f"{path}: holds NaN or infinite values")
    return layout_files(path, layout)


def layout_files(path, layout):
    """The files an image is read from (the header file first)."""
    return [path] if layout.data_file == path else [path, layout.data_file]


def gzip_holds(layout, voxels):
    """Whether gzip-compressed data are exactly the header's skipped bytes followed by `voxels` (the array ITK
    read, numpy order): proven by the gzip trailer's CRC32 and length, without decompressing the data again.
    False for anything the proof does not cover (several gzip members, bytes after the stream, values ITK
    changed while reading): check_stored_data then decides."""
    if layout.encoding != "gzip" or layout.at_end or layout.line_skip:
        return False
    stored = np.ascontiguousarray(voxels, dtype=layout.dtype)        # the file's byte order
    if stored.nbytes != layout.nbytes:
        return False
    try:
        with open(layout.data_file, "rb") as f:
            f.seek(-8, os.SEEK_END)
            crc, length = struct.unpack("<II", f.read(8))
            f.seek(layout.offset)
            with gzip.GzipFile(fileobj=f) as source:
                skipped = source.read(layout.skip)
    except (OSError, EOFError, zlib.error, ValueError):
        return False
    return (len(skipped) == layout.skip and length == (layout.skip + layout.nbytes) % 2 ** 32
            and crc == zlib.crc32(stored, zlib.crc32(skipped)))


def _scan(layout, path):
    """(decoded data bytes, all floats finite) of the stored voxels."""
    floats = layout.dtype.kind == "f"
    with open(layout.data_file, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if layout.at_end:        # only raw data can sit at the end: all we can check is that they fit
            if size - layout.offset < layout.nbytes:
                return size - layout.offset, True
            f.seek(size - layout.nbytes)
        else:
            f.seek(layout.offset)
            for _ in range(layout.line_skip):
                f.readline()
        if layout.encoding == "raw" and not floats:
            return size - f.tell(), True
        try:
            return _count(_decoded(f, layout.encoding), layout, floats)
        except (OSError, EOFError, zlib.error, ValueError) as err:
            raise InputError(f"{path}: compressed voxel data are corrupt or truncated ({err})") from None


def _decoded(f, encoding):
    if encoding == "zlib":
        yield from _inflate(f)
        return
    source = {"raw": lambda: f, "gzip": lambda: gzip.GzipFile(fileobj=f), "bzip2": lambda: bz2.BZ2File(f),
              "ascii": lambda: f, "hex": lambda: f}[encoding]()
    while block := source.read(CHUNK):
        yield block


def _inflate(f):
    """A zlib (or gzip) stream as MetaImage stores it; an unfinished stream is an error."""
    inflater = zlib.decompressobj(47)
    while not inflater.eof:
        block = f.read(CHUNK)
        if not block:
            raise EOFError("the compressed stream ends early")
        yield inflater.decompress(block)
    if inflater.unused_data.strip(b"\0") or f.read(1):
        raise ValueError("bytes after the end of the compressed stream")


def _count(chunks, layout, floats):
    """Decoded bytes (after the byte skip) and finiteness of a binary stream, chunk by chunk."""
    if layout.encoding in ("ascii", "hex"):
        return _count_text(chunks, layout), True
    total, carry, finite = 0, b"", True
    for block in chunks:
        block = carry + block
        if total < layout.skip:
            dropped = min(layout.skip - total, len(block))
            total, block = total + dropped, block[dropped:]
        usable = len(block) - len(block) % layout.dtype.itemsize
        if floats and finite:
            finite = bool(np.isfinite(np.frombuffer(block[:usable], layout.dtype)).all())
        total, carry = total + usable, block[usable:]
    return total + len(carry) - layout.skip, finite


def _count_text(chunks, layout):
    """Bytes the values of a text encoding stand for: ascii numbers × item size, or hex digit pairs."""
    if layout.encoding == "hex":
        return sum(len(block.translate(None, b" \t\r\n")) for block in chunks) // 2
    values, carry = 0, b""
    for block in chunks:
        tokens = (carry + block).split()
        ends_in_token = bool(block) and not block[-1:].isspace()   # its last number may go on in the next chunk
        carry = tokens.pop() if ends_in_token and tokens else b""
        values += len(tokens)
    return (values + bool(carry)) * layout.dtype.itemsize
