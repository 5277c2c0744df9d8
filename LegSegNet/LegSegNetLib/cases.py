"""Cohort cases: every image file and DICOM series under the inputs of `legsegnet batch` (folders, list files,
image files), each with a case id that is a safe, unique folder name, and DICOM identifiers when asked."""
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .dicom_headers import list_dicom_series
from .errors import InputError
from .volumes import IMAGE_SUFFIXES, is_image_file

LIST_SUFFIXES = (".txt", ".csv")
IDENTIFIER_TAGS = {"patient_name": "0010|0010", "patient_id": "0010|0020", "patient_birth_date": "0010|0030"}
CHARSET_TAG = "0008|0005"          # Specific Character Set
DICOM_CHARSETS = {"ISO_IR 100": "latin-1", "ISO_IR 101": "iso8859-2", "ISO_IR 109": "iso8859-3",
                  "ISO_IR 110": "iso8859-4", "ISO_IR 144": "iso8859-5", "ISO_IR 127": "iso8859-6",
                  "ISO_IR 126": "iso8859-7", "ISO_IR 138": "iso8859-8", "ISO_IR 148": "iso8859-9",
                  "ISO_IR 166": "tis-620", "ISO_IR 192": "utf-8", "GB18030": "gb18030", "GBK": "gbk",
                  "ISO_IR 6": "ascii"}

@dataclass
class Case:
    case_id: str
    input: str
    series_uid: str = None                          # one series of a DICOM folder
    identifiers: dict = field(default_factory=dict)  # DICOM patient tags; only with keep_identifiers


def discover_cases(inputs, outdir=None, keep_identifiers=False):
    """Every case under the inputs (folders, list files, image files), each with a unique case id."""
    exclude = Path(outdir).resolve() if outdir else None
    found = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise InputError(f"{item}: no such file or folder")
        if path.is_dir():
            found += _cases_in_folder(path, exclude)
        elif path.name.lower().endswith(LIST_SUFFIXES):
            found += _cases_in_list(path, exclude)
        elif is_image_file(path):
            found.append(Case(_file_id(Path(path.name)), str(path)))
        else:
            raise InputError(f"{item}: not a folder, an image file (NIfTI, NRRD, MHA) or a list file (.txt, .csv)")
    if not found:
        raise InputError(f"no image files or DICOM series found in {', '.join(map(str, inputs))}")
    cases = _unique(found)
    if keep_identifiers:
        for case in cases:
            case.identifiers = read_identifiers(case)
    return cases


def _cases_in_folder(folder, exclude=None):
    """Image files and DICOM series (each series one case) in a folder tree, our own output folder excepted."""
    cases = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not _is_within(Path(root, d), exclude))
        images = sorted(name for name in files if is_image_file(name))
        cases += [Case(_file_id(Path(root, name).relative_to(folder)), str(Path(root, name))) for name in images]
        if len(images) < len(files):       # other files may be DICOM
            for uid in list_dicom_series(root, recursive=False):
                cases.append(Case(series_id(uid), root, uid))
    return cases


def _cases_in_list(list_file, exclude=None):
    """`.txt`: one path a line (# comments); `.csv`: a `path` column and an optional `case_id` column.
    Relative paths are relative to the list file. A listed path that is missing becomes a failed case."""
    import csv
    base = list_file.parent
    with open(list_file, newline="") as f:
        if list_file.name.lower().endswith(".csv"):
            rows = list(csv.DictReader(f))
            if rows and "path" not in rows[0]:
                raise InputError(f"{list_file}: a .csv list needs a 'path' column (and optionally 'case_id')")
            entries = [(row["path"].strip(), (row.get("case_id") or "").strip()) for row in rows]
        else:
            entries = [(line.strip(), "") for line in f]
    cases = []
    for text, given_id in entries:
        if not text or text.startswith("#"):
            continue
        path = Path(text) if Path(text).is_absolute() else base / text
        if path.is_dir():
            found = _cases_in_folder(path, exclude)
            for case in found:
                if given_id:
                    case.case_id = safe_id(given_id if len(found) == 1 else f"{given_id}__{case.case_id}")
            cases += found
        else:
            cases.append(Case(safe_id(given_id) if given_id else _file_id(_relative(path, base)), str(path)))
    return cases


def series_id(uid):
    """Case id of a DICOM series: a short hash of its SeriesInstanceUID (folder names often hold patient names)."""
    return "series-" + hashlib.sha256(uid.encode()).hexdigest()[:12]


def _file_id(relative):
    """Case id of an image file: its path relative to the input folder, without the image suffix."""
    name = str(relative)
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            name = name[:-len(suffix)]
            break
    return safe_id(name.replace(os.sep, "__").replace("/", "__"))


def safe_id(text, limit=100):
    """A case folder name that is safe everywhere: letters, digits and `._-` only (so no path separator and no
    absolute path), no `..`, never hidden (temporary folders are), not empty, and short (long ids keep a hash)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text))
    name = re.sub(r"\.{2,}", ".", name).lstrip(".") or "case"
    if len(name) > limit:
        name = name[:limit - 13] + "-" + hashlib.sha256(str(text).encode()).hexdigest()[:12]
    return name


def _relative(path, base):
    try:
        return path.relative_to(base)
    except ValueError:
        return Path(path.name)


def _is_within(path, folder):
    if folder is None:
        return False
    resolved = path.resolve()
    return resolved == folder or folder in resolved.parents


def _unique(cases):
    """Drop repeated inputs; make every id safe, and unique even on case-insensitive file systems: clashing ids
    get a suffix from a hash of the input so ids stay stable."""
    seen_inputs, seen_ids, unique = set(), set(), []
    for case in cases:
        key = (os.path.abspath(case.input), case.series_uid)
        if key in seen_inputs:
            continue
        seen_inputs.add(key)
        base = case.case_id = safe_id(case.case_id)
        salt = 0
        while case.case_id.lower() in seen_ids:
            text = repr(key) if salt == 0 else repr((key, salt))
            case.case_id = f"{base}-{hashlib.sha256(text.encode()).hexdigest()[:6]}"
            salt += 1
        seen_ids.add(case.case_id.lower())
        unique.append(case)
    return unique


def read_identifiers(case):
    """Patient name, ID and birth date from the first file of a DICOM series (only with --keep-identifiers)."""
    if not case.series_uid:
        return {}
    import SimpleITK as sitk
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(case.input, case.series_uid)
    reader = sitk.ImageFileReader()
    reader.SetFileName(files[0])
    reader.ReadImageInformation()
    charset = reader.GetMetaData(CHARSET_TAG).strip() if reader.HasMetaDataKey(CHARSET_TAG) else ""
    values = {name: dicom_text(reader.GetMetaData(tag), charset) if reader.HasMetaDataKey(tag) else ""
              for name, tag in IDENTIFIER_TAGS.items()}
    return {**values, "series_instance_uid": case.series_uid}


def dicom_text(value, charset=""):
    """A DICOM text value as SimpleITK hands it over (the file's bytes, undecodable ones as surrogates) decoded
    by the file's Specific Character Set; without one, UTF-8 if valid, else Latin-1 (what exports often use)."""
    raw = value.encode("utf-8", "surrogateescape")
    names = [name.strip().replace("ISO 2022 IR ", "ISO_IR ") for name in charset.split("\\")]
    encoding = next((DICOM_CHARSETS[name] for name in names if name in DICOM_CHARSETS), None)
    if encoding is None:
        try:
            return raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            encoding = "latin-1"
    return raw.decode(encoding, errors="replace").strip()
