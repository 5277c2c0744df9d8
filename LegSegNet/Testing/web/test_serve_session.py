"""The page's actions without the page (WebSession on slicer-core's MRML): one run at a time, Cancel leaves the
scene unchanged, uploads refused by size or by the CLI's checks with the user's file name."""
import time

import pytest
import slicer

from LegSegNetLib.errors import InputError
from LegSegNetLib.serve_session import Busy, WebSession


@pytest.fixture
def session(web_data):
    session = WebSession(slicer.vtkMRMLScene())
    session.load(web_data / "ct.nii.gz")
    yield session
    session.cancel()


def test_one_run_at_a_time_and_cancel_changes_nothing(session, web_data):
    session.start("classical")
    with pytest.raises(Busy):
        session.start("classical")
    with pytest.raises(Busy):
        session.load(web_data / "ct.nii.gz")
    session.cancel()
    assert session.poll() == "idle" and not session.has_result() and session.tables() == ([], [])
    session.start("classical")
    while session.poll() == "running":
        time.sleep(0.05)
    assert session.has_result() and [r["Segment"] for r in session.tables()[0]] == ["SAT", "SM", "IMAT", "Bone"]


def test_uploads_are_limited_and_checked_like_the_cli(session, web_data):
    good = (web_data / "ct.nii.gz").read_bytes()
    with pytest.raises(InputError, match="over the upload limit"):
        session.load_upload("big.nii.gz", good, limit_bytes=len(good) - 1)
    with pytest.raises(InputError) as refused:
        session.load_upload("../../broken.nii.gz", good[: len(good) // 2], limit_bytes=len(good))
    assert "broken.nii.gz" in str(refused.value) and "legsegnet-upload" not in str(refused.value)
    assert session.volume.GetName() == "ct"      # the CT loaded before stays
    with pytest.raises(InputError, match="unknown engine"):
        session.start("fastest")
