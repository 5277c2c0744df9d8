"""DICOM series: finding the series in a folder and reading one as a CT volume."""
import logging
import os

import SimpleITK as sitk

from .errors import InputError

log = logging.getLogger(__name__)


def list_dicom_series(path):
    """{SeriesInstanceUID: file names in slice order} for every DICOM series in a folder and its subfolders."""
    reader = sitk.ImageSeriesReader()
    series = {}
    for root, _dirs, _files in os.walk(path):
        for uid in reader.GetGDCMSeriesIDs(root) or ():
            series.setdefault(uid, list(reader.GetGDCMSeriesFileNames(root, uid)))
    return series


def read_dicom_folder(path, notes, series_uid=None):
    reader = sitk.ImageSeriesReader()
    series = list_dicom_series(path)
    if series_uid is not None:   # one named series (cohort runs: each series is its own case)
        if series_uid not in series:
            raise InputError(f"{path}: the requested DICOM series is not in this folder")
        series = {series_uid: series[series_uid]}
    if not series:
        raise InputError(f"{path}: folder holds no DICOM series")
    uid, files = max(series.items(), key=lambda item: len(item[1]))
    if len(series) > 1:
        note = f"{len(series)} DICOM series found; using the largest ({len(files)} files, {uid})"
        log.warning(note)
        notes.append(note)
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    image = reader.Execute()
    modality = reader.GetMetaData(0, "0008|0060").strip() if reader.HasMetaDataKey(0, "0008|0060") else ""
    if modality and modality != "CT":
        raise InputError(f"{path}: DICOM modality is {modality}, not CT")
    return image, files
