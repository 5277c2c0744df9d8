"""Browser tests of `legsegnet serve` (Playwright driving Debian's Chromium).

They need the `web-test` extra (trame-slicer pins slicer-core 5.11, so they run in a venv of their own: scripts/test
makes `.venv-web`). In a venv without trame-slicer this folder is not collected (../conftest.py).
"""
import pytest
import SimpleITK as sitk
from webserve_helpers import chromium_path

from LegSegNetLib.phantom import make_phantom


@pytest.fixture(scope="session")
def web_data(tmp_path_factory):
    """A served folder holding the default phantom (32 slices) as ct.nii.gz."""
    folder = tmp_path_factory.mktemp("served") / "data"
    folder.mkdir()
    sitk.WriteImage(make_phantom(seed=0).ct, str(folder / "ct.nii.gz"), useCompression=True)
    return folder


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright
    path = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield browser
        browser.close()
