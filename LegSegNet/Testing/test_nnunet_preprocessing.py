"""The published app's slice preparation: HU window -> uint8, and the bicubic resize equal to OpenCV's."""
import cv2
import numpy as np

from LegSegNetLib.nnunet import hu_to_uint8, resize_cubic
from LegSegNetLib.phantom import make_phantom
from LegSegNetLib.volumes import AxialView

from conftest import array


def test_hu_window_truncates_like_the_app():
    hu = np.array([-1000, -200, -199, 0, 1, 199.9, 200, 3000], np.float32)
    x = (np.clip(hu, -200, 200) - np.float32(-200)) / np.float32(400) * np.float32(255)
    assert hu_to_uint8(hu).tolist() == x.astype(np.uint8).tolist() == [0, 0, 0, 127, 128, 254, 255, 255]


def test_resize_equals_opencv_inter_cubic_on_phantom_slices():
    phantom = make_phantom(seed=3, shape=(6, 230, 301), spacing=(5.0, 1.1, 1.1))
    view = AxialView.of(phantom.ct)
    slices = hu_to_uint8(view.to_canonical(array(phantom.ct)))
    ours = resize_cubic(slices)
    for i, image in enumerate(slices):
        reference = cv2.resize(image, (256, 256), interpolation=cv2.INTER_CUBIC)
        assert np.array_equal(ours[i], reference), f"slice {i}: {(ours[i] != reference).sum()} pixels differ"


def test_resize_equals_opencv_on_random_images_of_many_sizes():
    rng = np.random.default_rng(0)
    differing, total = 0, 0
    for h, w in [(512, 512), (300, 200), (256, 300), (199, 256), (64, 77), (700, 333), (257, 255), (1024, 96)]:
        images = rng.integers(0, 256, (3, h, w), dtype=np.uint8)
        ours = resize_cubic(images)
        for image, mine in zip(images, ours):
            differing += int((mine != cv2.resize(image, (256, 256), interpolation=cv2.INTER_CUBIC)).sum())
            total += mine.size
    assert differing == 0, f"{differing} of {total} pixels differ from cv2.resize(INTER_CUBIC)"


def test_resize_of_a_256_slice_is_the_slice():
    image = np.random.default_rng(1).integers(0, 256, (2, 256, 256), dtype=np.uint8)
    assert np.array_equal(resize_cubic(image), image)
