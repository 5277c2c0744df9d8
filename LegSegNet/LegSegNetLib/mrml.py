"""MRML glue: volume nodes and segmentation nodes (content, edit detection, labels on the CT grid).

Tables and export are in mrml_tables.py, the background run in mrml_run.py. Needs only MRML (inside Slicer, or
the `slicer-core` wheel headless); no Qt, no Slicer application. `slicer` and `vtk` are imported inside the
functions so that `import LegSegNetLib` never needs them. Nothing here adds a helper node to the scene.

Coordinates: SimpleITK images (the core) are in LPS, MRML nodes in RAS; IJK→RAS = diag(-1, -1, 1) · IJK→LPS.
"""
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .tissues import SIDE_LABELS, SIDE_MODIFIERS, TISSUES, segment_name, terminology_entry, tissue_for_name
from .volumes import ijk_to_lps, image_from_matrix

log = logging.getLogger(__name__)

MODULE_DIR = Path(__file__).resolve().parent.parent          # LegSegNet/ (holds LegSegNetLib and Resources)
FINGERPRINT_ATTRIBUTE = "LegSegNet.Fingerprint"   # content hash when LegSegNet last wrote the segmentation
ENGINE_ATTRIBUTE = "LegSegNet.Engine"
EDITED_COPY_SUFFIX = " (edited, before rerun)"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class EditedOutputError(InputError):
    """The chosen output segmentation was changed since LegSegNet produced it (or was not produced by it)."""


def _slicer():
    import slicer      # Slicer's own module, or the slicer-core wheel
    return slicer


# ---------------------------------------------------------------- volumes
def ijk_to_ras(volume_node):
    import vtk
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def volume_array(volume_node):
    """Voxel values (k, j, i) as a numpy view of the node's image data."""
    from vtk.util.numpy_support import vtk_to_numpy
    image = volume_node.GetImageData()
    if image is None:
        raise InputError(f"volume '{volume_node.GetName()}' has no voxels")
    if image.GetNumberOfScalarComponents() != 1:
        raise InputError(f"volume '{volume_node.GetName()}' is not a scalar volume")
    dims = image.GetDimensions()
    return vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[::-1])


def volume_to_image(volume_node):
    """SimpleITK image (LPS geometry) holding a copy of the node's voxels. The node's own IJK→RAS is used;
    parent transforms are not applied (the segmentation is placed under the same transform)."""
    return image_from_matrix(np.array(volume_array(volume_node)), LPS_TO_RAS @ ijk_to_ras(volume_node))


def image_to_volume(image, scene, name="CT"):
    """A new scalar volume node in the scene from a SimpleITK image (for tests and the self-test)."""
    import vtk
    from vtk.util.numpy_support import numpy_to_vtk
    array = sitk.GetArrayFromImage(image)
    data = vtk.vtkImageData()
    data.SetDimensions(image.GetSize())
    data.GetPointData().SetScalars(numpy_to_vtk(array.ravel(), deep=True))
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.SetAndObserveImageData(data)
    ras = LPS_TO_RAS @ ijk_to_lps(image)
    node.SetIJKToRASMatrix(_vtk_matrix(ras))
    node.CreateDefaultDisplayNodes()
    return node


def _vtk_matrix(array):
    import vtk
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r][c]))
    return matrix


# ---------------------------------------------------------------- segmentations
@dataclass(frozen=True)
class SegmentSpec:
    tissue: object
    side: str = None      # "left", "right" or None (both legs)

    @property
    def segment_id(self):
        return segment_name(self.tissue, self.side).replace(" ", "_")


def segment_specs(split):
    return [SegmentSpec(t, side) for t in TISSUES for side in (("right", "left") if split else (None,))]


def labels_to_segmentation(labels, volume_node, segmentation_node, sides=None, engine=None):
    """Fill segmentation_node with one segment per tissue (per tissue and leg if `sides` is given) from
    labels (k, j, i) on the volume's grid, replacing its content (callers keep an edited one: keep_edited_copy)."""
    slicer = _slicer()
    specs = segment_specs(sides is not None)
    lut = np.zeros((len(TISSUES) + 1) * 3, np.uint8)   # (label, side) → value of the segment in the layer
    for value, spec in enumerate(specs, start=1):
        side_values = [SIDE_LABELS[spec.side]] if spec.side else [0, 1, 2]
        for side in side_values:
            lut[spec.tissue.label * 3 + side] = value
    key = labels.astype(np.intp) * 3 + (sides if sides is not None else 0)
    layer = _oriented_image(lut[key], ijk_to_ras(volume_node))

    modified = segmentation_node.StartModify()
    try:
        segmentation = segmentation_node.GetSegmentation()
        segmentation.RemoveAllSegments()
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
        segmentation_node.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
        binary = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
        segmentation.SetSourceRepresentationName(binary)
        for value, spec in enumerate(specs, start=1):
            segment = slicer.vtkSegment()
            segment.SetName(segment_name(spec.tissue, spec.side))
            segment.SetNameAutoGenerated(False)
            segment.SetColor(*spec.tissue.color_float)
            segment.SetColorAutoGenerated(False)
            segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), terminology_entry(spec.tissue, spec.side))
            segment.SetLabelValue(value)
            segment.AddRepresentation(binary, layer)      # all segments share one layer
            segmentation.AddSegment(segment, spec.segment_id)
        if engine:
            segmentation_node.SetAttribute(ENGINE_ATTRIBUTE, engine)
        segmentation_node.CreateDefaultDisplayNodes()
        _place_beside(segmentation_node, volume_node)
    finally:
        segmentation_node.EndModify(modified)
    segmentation_node.SetAttribute(FINGERPRINT_ATTRIBUTE, fingerprint(segmentation_node))
    return segmentation_node


def _oriented_image(array, ijk_to_ras_matrix):
    slicer = _slicer()
    from vtk.util.numpy_support import numpy_to_vtk
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(array.shape[::-1])
    image.GetPointData().SetScalars(numpy_to_vtk(np.ascontiguousarray(array).ravel(), deep=True))
    image.SetImageToWorldMatrix(_vtk_matrix(ijk_to_ras_matrix))
    return image


def _place_beside(node, other):
    """Put node beside other in the subject hierarchy (a segmentation in its CT's study)."""
    slicer = _slicer()
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(node.GetScene())
    if hierarchy is None:
        return
    other_item = hierarchy.GetItemByDataNode(other)
    item = hierarchy.GetItemByDataNode(node)
    parent = hierarchy.GetItemParent(other_item) if other_item else 0
    if item and parent:
        hierarchy.SetItemParent(item, parent)


def fingerprint(segmentation_node):
    """Hash of the segments (ids, names, layers, label values) and of the binary labelmap layers they share: one
    pass over the voxels (a few hundred ms for 600×512×512), and any edit, even of one voxel, changes it."""
    slicer = _slicer()
    from vtk.util.numpy_support import vtk_to_numpy
    segmentation = segmentation_node.GetSegmentation()
    digest = hashlib.sha256(f"{segmentation.GetSourceRepresentationName()}|".encode())
    for segment_id in segmentation.GetSegmentIDs():
        segment = segmentation.GetSegment(segment_id)
        digest.update(f"{segment_id}|{segment.GetName()}|{segmentation.GetLayerIndex(segment_id)}|"
                      f"{segment.GetLabelValue()}|".encode())
    binary = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    if segmentation.GetSourceRepresentationName() != binary:     # e.g. closed surfaces imported as source
        digest.update(str(segmentation_node.GetMTime()).encode())  # not persistent: counts as edited, never lost
        return digest.hexdigest()
    for layer in range(segmentation.GetNumberOfLayers()):
        image = segmentation.GetLayerDataObject(layer)
        digest.update(f"{image.GetExtent()}|{image.GetScalarTypeAsString()}|".encode())
        scalars = image.GetPointData().GetScalars()
        if scalars is not None:
            digest.update(memoryview(np.ascontiguousarray(vtk_to_numpy(scalars))))
    return digest.hexdigest()


def edited_since_produced(segmentation_node):
    """True if the node holds segments LegSegNet did not write in exactly this state."""
    if segmentation_node is None or segmentation_node.GetSegmentation().GetNumberOfSegments() == 0:
        return False
    return segmentation_node.GetAttribute(FINGERPRINT_ATTRIBUTE) != fingerprint(segmentation_node)


def keep_edited_copy(segmentation_node):
    """Before LegSegNet replaces an edited segmentation, keep its content in a new, hidden node named
    '<name> (edited, before rerun)' beside it (the scene's undo is off by default in Slicer, so undo cannot be
    relied on). Returns the copy, or None when there is nothing edited to keep."""
    if not edited_since_produced(segmentation_node):
        return None
    scene = segmentation_node.GetScene()
    copy = scene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                   scene.GenerateUniqueName(segmentation_node.GetName() + EDITED_COPY_SUFFIX))
    _copy_segments(segmentation_node, copy)
    copy.SetAndObserveTransformNodeID(segmentation_node.GetTransformNodeID())
    copy.RemoveAttribute(FINGERPRINT_ATTRIBUTE)
    copy.CreateDefaultDisplayNodes()
    copy.GetDisplayNode().SetVisibility(False)
    _place_beside(copy, segmentation_node)
    log.info("LegSegNet: kept the edited segmentation as '%s'", copy.GetName())
    return copy


def _copy_segments(source_node, target_node):
    """Every segment with its metadata (name, colour, terminology, label value) and its own copy of the voxels,
    layers kept shared as in the source. (Copying segments whole constructs representations through VTK's object
    factory, which the slicer-core wheel lacks; this works in both.)"""
    slicer = _slicer()
    source, target = source_node.GetSegmentation(), target_node.GetSegmentation()
    name = source.GetSourceRepresentationName()
    target.SetSourceRepresentationName(name)
    geometry = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    target.SetConversionParameter(geometry, source.GetConversionParameter(geometry))
    shared = name == slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    layers = {}
    for segment_id in source.GetSegmentIDs():
        segment = source.GetSegment(segment_id)
        layer = source.GetLayerIndex(segment_id) if shared else segment_id
        if layer not in layers:
            data = segment.GetRepresentation(name).NewInstance()
            data.DeepCopy(segment.GetRepresentation(name))
            layers[layer] = data
        copy = slicer.vtkSegment()
        copy.DeepCopyMetadata(segment)
        copy.AddRepresentation(name, layers[layer])
        target.AddSegment(copy, segment_id)


def check_output(segmentation_node, overwrite=False):
    if not overwrite and edited_since_produced(segmentation_node):
        raise EditedOutputError(f"segmentation '{segmentation_node.GetName()}' was edited since LegSegNet produced "
                                "it (or holds other segments); choose a new output or pass overwrite=True")


def spec_of_segment(segment):
    """(tissue, side) a segment stands for, from its terminology type and modifier, else its name; or None."""
    parts = segment_terminology(segment).split("~")
    if len(parts) >= 4:
        for tissue in TISSUES:
            if parts[2] == str(tissue.type) and (tissue.region.value == "" or parts[5] == str(tissue.region)):
                side = next((s for s, code in SIDE_MODIFIERS.items() if parts[3] == str(code)), None)
                return SegmentSpec(tissue, side)
    words = segment.GetName().split()
    tissue = tissue_for_name(words[0]) if words else None
    if tissue is None:
        return None
    side = words[1].lower() if len(words) > 1 and words[1].lower() in SIDE_MODIFIERS else None
    return SegmentSpec(tissue, side)


def segment_terminology(segment):
    """The segment's terminology entry string ('' if it has none)."""
    import vtk
    value = vtk.reference("")
    found = segment.GetTag(segment.GetTerminologyEntryTagName(), value)
    return str(value) if found else ""


def segmentation_to_labels(segmentation_node, volume_node):
    """(labels, sides) as (k, j, i) arrays on the volume's grid. sides is None unless every tissue segment
    belongs to one leg. Segments that are not tissues are ignored (logged)."""
    segmentation = segmentation_node.GetSegmentation()
    ids, specs = [], []
    for segment_id in segmentation.GetSegmentIDs():
        spec = spec_of_segment(segmentation.GetSegment(segment_id))
        if spec is None:
            log.warning("segment '%s' is not a LegSegNet tissue; left out of the statistics",
                        segmentation.GetSegment(segment_id).GetName())
            continue
        ids.append(segment_id)
        specs.append(spec)
    if not ids:
        return np.zeros(volume_array(volume_node).shape, np.uint8), None
    values = merged_labelmap(segmentation_node, volume_node, ids)     # 1..n in the order of ids
    labels = np.array([0] + [s.tissue.label for s in specs], np.uint8)[values]
    if all(s.side for s in specs):
        return labels, np.array([0] + [SIDE_LABELS[s.side] for s in specs], np.uint8)[values]
    return labels, None


def merged_labelmap(segmentation_node, volume_node, segment_ids, read_layers=True):
    """(k, j, i) array on the volume's grid: n+1 where the n-th of segment_ids is (later ones win on overlap),
    else 0. Computed without adding any node to the scene: straight from the shared binary labelmap layers when
    they lie on the CT's grid (LegSegNet's result and Segment Editor edits of it), else through Slicer's merge."""
    if segmentation_node.GetTransformNodeID() != volume_node.GetTransformNodeID():
        raise InputError(f"segmentation '{segmentation_node.GetName()}' and volume '{volume_node.GetName()}' are "
                         "under different transforms; put them under the same one")
    merged = _merged_from_layers(segmentation_node, volume_node, segment_ids) if read_layers else None
    return merged if merged is not None else _merged_by_slicer(segmentation_node, volume_node, segment_ids)


def _merged_from_layers(segmentation_node, volume_node, segment_ids):
    """merged_labelmap read off the layers (one table lookup per layer; on overlap the larger value, i.e. the later
    segment, wins, as in Slicer's merge); None when a layer is not on the CT's grid or not 8/16-bit."""
    slicer = _slicer()
    segmentation = segmentation_node.GetSegmentation()
    binary = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    if segmentation.GetSourceRepresentationName() != binary:
        return None
    shape, grid = volume_array(volume_node).shape, ijk_to_ras(volume_node)
    tables = {}                                    # layer index → (layer image, value of each label in it)
    for value, segment_id in enumerate(segment_ids, start=1):
        segment = segmentation.GetSegment(segment_id)
        layer = segmentation.GetLayerIndex(segment_id)
        image, table = tables.setdefault(layer, (segment.GetRepresentation(binary), {}))
        table[segment.GetLabelValue()] = value
    merged = np.zeros(shape, np.uint8 if len(segment_ids) < 256 else np.uint16)
    for image, table in tables.values():
        block = _layer_block(image, grid, shape)
        if block is None:
            return None
        voxels, region = block
        if voxels is None:                         # an empty layer
            continue
        lut = np.zeros(256 if voxels.itemsize == 1 else 65536, merged.dtype)
        for label, value in table.items():
            if 0 < label < lut.size:
                lut[label] = value
        np.maximum(merged[region], lut[voxels], out=merged[region])
    return merged


def _layer_block(image, grid, shape):
    """(voxels as unsigned 8/16-bit, the CT index region they cover) of a layer on the CT's grid; (None, None) for
    an empty layer; None when the layer is elsewhere (other matrix, beyond the CT) or of another type."""
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    if not np.allclose([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], grid, atol=1e-4):
        return None
    i0, i1, j0, j1, k0, k1 = image.GetExtent()
    if i1 < i0 or j1 < j0 or k1 < k0 or image.GetPointData().GetScalars() is None:
        return None, None
    if min(i0, j0, k0) < 0 or k1 >= shape[0] or j1 >= shape[1] or i1 >= shape[2] \
            or image.GetNumberOfScalarComponents() != 1:
        return None
    voxels = vtk_to_numpy(image.GetPointData().GetScalars())
    if voxels.dtype.kind not in "ui" or voxels.itemsize > 2:
        return None
    voxels = voxels.view(np.uint8 if voxels.itemsize == 1 else np.uint16)
    return voxels.reshape(k1 - k0 + 1, j1 - j0 + 1, i1 - i0 + 1), np.s_[k0:k1 + 1, j0:j1 + 1, i0:i1 + 1]


def _merged_by_slicer(segmentation_node, volume_node, segment_ids):
    """merged_labelmap through Slicer's GenerateMergedLabelmapForAllSegments (any geometry; slower)."""
    slicer = _slicer()
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy
    shape = volume_array(volume_node).shape
    geometry = slicer.vtkOrientedImageData()
    geometry.SetExtent(0, shape[2] - 1, 0, shape[1] - 1, 0, shape[0] - 1)
    geometry.SetImageToWorldMatrix(_vtk_matrix(ijk_to_ras(volume_node)))
    ids, values = vtk.vtkStringArray(), vtk.vtkIntArray()
    for value, segment_id in enumerate(segment_ids, start=1):
        ids.InsertNextValue(segment_id)
        values.InsertNextValue(value)
    merged = slicer.vtkOrientedImageData()
    if not segmentation_node.GenerateMergedLabelmapForAllSegments(
            merged, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY, geometry, ids, values):
        raise RuntimeError(f"cannot export segmentation '{segmentation_node.GetName()}' on the CT grid")
    if merged.GetExtent() != geometry.GetExtent():
        raise RuntimeError(f"segmentation '{segmentation_node.GetName()}' came out with extent {merged.GetExtent()}, "
                           f"not the CT's {geometry.GetExtent()}")
    dtype = np.uint8 if len(segment_ids) < 256 else np.uint16
    return vtk_to_numpy(merged.GetPointData().GetScalars()).reshape(shape).astype(dtype)
