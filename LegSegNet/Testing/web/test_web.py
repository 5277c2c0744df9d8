"""The radiologist's path in the browser: choose a CT, Segment legs, correct with a Segment Editor effect, Update
statistics, download — against the real server (trame-slicer, slicer-core MRML) in Chromium."""
import csv
import io
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from LegSegNetLib.cli import main as cli_main
from LegSegNetLib.mrml import EDITED_COPY_SUFFIX
from LegSegNetLib.tissues import TISSUES

from webserve_helpers import REPO, Server

TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def server(web_data):
    server = Server(web_data)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def page(browser, server):
    context = browser.new_context(viewport={"width": 1600, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server.url)
    page.get_by_role("button", name="Segment legs").wait_for()
    yield page
    context.close()


@pytest.fixture(scope="module")
def cli_volumes(web_data, tmp_path_factory):
    """Volumes (cm3, both legs) `legsegnet segment` gives on the same file with the same engine."""
    out = tmp_path_factory.mktemp("cli") / "out"
    assert cli_main(["segment", str(web_data / "ct.nii.gz"), "-o", str(out), "--engine", "threshold"]) == 0
    with open(out / "statistics.csv", newline="") as f:
        return {r["tissue"]: float(r["volume_cm3"]) for r in csv.DictReader(f) if r["leg"] == "both"}


def choose(page, select_id, option):
    page.locator(".v-select", has=page.locator(f"#{select_id}")).click()
    page.locator(".v-overlay .v-list-item", has_text=option).first.click()


def table(page, table_id):
    """{first cell: [cells]} of a table on the page."""
    rows = page.eval_on_selector_all(f"#{table_id} tbody tr",
                                     "rows => rows.map(r => Array.from(r.cells).map(c => c.innerText.trim()))")
    return {row[0]: row[1:] for row in rows}


def column(page, table_id, name):
    headers = page.eval_on_selector_all(f"#{table_id} thead th", "cells => cells.map(c => c.innerText.trim())")
    index = headers.index(name) - 1
    return {key: float(cells[index]) for key, cells in table(page, table_id).items()}


def message(page, text):
    page.locator("#message", has_text=text).wait_for()
    return page.locator("#message").inner_text()


def download(page, label):
    with page.expect_download() as info:
        page.get_by_role("button", name=label).click()
    return info.value.suggested_filename, open(info.value.path(), "rb").read()


def assert_not_blank(path):
    pixels = np.asarray(Image.open(path).convert("L"), float)
    assert pixels.std() > 20, f"{path} looks blank (std {pixels.std():.1f})"


def segment(page, expect="segmented"):
    page.get_by_role("button", name="Segment legs").click()
    return message(page, expect)


def test_segment_correct_update_download(page, cli_volumes, tmp_path):
    page.screenshot(path=tmp_path / "before.png")
    assert_not_blank(tmp_path / "before.png")
    choose(page, "case-select", "ct.nii.gz")
    message(page, "loaded ct.nii.gz")
    choose(page, "engine-select", "classical")
    assert "32 / 32 slices" in segment(page)

    volumes = column(page, "statistics-table", "Volume cm3")
    assert volumes == pytest.approx({t.short: round(cli_volumes[t.short], 2) for t in TISSUES}, abs=0.006)
    per_leg_sat = column(page, "metrics-table", "SAT volume cm3")
    page.wait_for_timeout(2000)          # the views stream their frames after the table is filled
    page.screenshot(path=REPO / "docs" / "web-page.png")
    assert_not_blank(REPO / "docs" / "web-page.png")

    # Segment Editor: Islands, "Keep largest" on the active segment (SAT) erases the other leg's SAT ring
    page.locator("button:has(.mdi-scatter-plot)").click()
    page.get_by_role("button", name="Apply").click()
    page.get_by_role("button", name="Update statistics").click()
    message(page, "statistics updated")
    after = column(page, "statistics-table", "Volume cm3")
    assert after["SAT"] == pytest.approx(max(per_leg_sat["left"], per_leg_sat["right"]), rel=0.02)
    assert {k: v for k, v in after.items() if k != "SAT"} == {k: v for k, v in volumes.items() if k != "SAT"}

    name, data = download(page, "Download statistics CSV")
    assert name.endswith("statistics.csv")
    rows = {r["Segment"]: float(r["Volume cm3"]) for r in csv.DictReader(io.StringIO(data.decode()))}
    assert rows == pytest.approx(after, abs=0.006)
    name, data = download(page, "Download overview PNG")
    assert_not_blank(io.BytesIO(data))

    # a rerun on the edited segmentation asks first; Replace keeps the edited one as a copy
    page.get_by_role("button", name="Segment legs").click()
    page.get_by_text("Replace the edited segmentation?").wait_for()
    page.get_by_role("button", name="Keep editing").click()
    assert column(page, "statistics-table", "Volume cm3") == after
    page.get_by_role("button", name="Segment legs").click()
    page.get_by_role("button", name="Replace").click()
    assert EDITED_COPY_SUFFIX.strip() in message(page, "kept as")
    assert column(page, "statistics-table", "Volume cm3") == volumes


def test_corrupt_upload_shows_error_then_next_run_works(page, web_data, tmp_path):
    good = (web_data / "ct.nii.gz").read_bytes()
    corrupt = tmp_path / "broken.nii.gz"
    corrupt.write_bytes(good[: len(good) // 3])
    page.locator("#upload").set_input_files(str(corrupt))
    assert "broken.nii.gz" in message(page, "broken.nii.gz")
    assert "error" in page.locator("#message").get_attribute("class")

    upload = tmp_path / "leg.nii.gz"
    upload.write_bytes(good)
    page.locator("#upload").set_input_files(str(upload))
    message(page, "loaded leg.nii.gz")
    assert "32 / 32 slices" in segment(page)
    assert column(page, "statistics-table", "Volume cm3")["SM"] > 0


def test_token_required_when_not_local(web_data):
    server = Server(web_data, "--host", "0.0.0.0")
    try:
        assert "?token=" in server.url
        token = server.url.split("?token=")[1]
        for path in ("/index.html", "/ws", "/", "/trame_slicer_2.0.0/chunk_loader.js"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(server.local_url(path), timeout=10)
            assert refused.value.code == 403
        with pytest.raises(urllib.error.HTTPError) as wrong:
            urllib.request.urlopen(server.local_url(f"/index.html?token={token[:-1]}x"), timeout=10)
        assert wrong.value.code == 403
        assert urllib.request.urlopen(server.local_url(f"/index.html?token={token}"), timeout=10).status == 200
    finally:
        server.stop()


def test_page_works_through_the_token(browser, web_data):
    """With the token in the URL the page's scripts and websocket get through (the cookie the first request set)."""
    server = Server(web_data, "--token", "a-token-for-the-test-0123")
    try:
        context = browser.new_context()
        page = context.new_page()
        page.goto(server.local_url("/index.html?token=a-token-for-the-test-0123"))
        page.get_by_role("button", name="Segment legs").wait_for(timeout=TIMEOUT_MS)
        context.close()
    finally:
        server.stop()
