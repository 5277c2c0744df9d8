"""What `legsegnet serve` enforces before any page is built: local bind, the token, files only from inside --data."""
import os

import pytest

from LegSegNetLib.cli import main as cli_main
from LegSegNetLib.errors import InputError
from LegSegNetLib.serve import access_token, case_path, is_local, list_cases, page_url


def test_local_hosts_need_no_token_others_get_one():
    assert is_local("127.0.0.1") and is_local("localhost") and is_local("::1")
    assert not is_local("0.0.0.0") and not is_local("192.168.1.20") and not is_local("example.org")
    assert access_token("127.0.0.1") is None
    generated = access_token("0.0.0.0")
    assert len(generated) >= 30 and generated != access_token("0.0.0.0")
    assert access_token("0.0.0.0", "given-token-0123456789") == "given-token-0123456789"
    assert page_url("0.0.0.0", 8080, "abc") == "http://0.0.0.0:8080/index.html?token=abc"
    with pytest.raises(InputError, match="at least 16"):
        access_token("0.0.0.0", "short")


def test_only_cts_inside_the_folder_are_offered_and_read(tmp_path):
    data = tmp_path / "data"
    (data / "series").mkdir(parents=True)
    (data / "ct.nii.gz").write_bytes(b"x")
    (data / "series" / "IM0001").write_bytes(b"x")
    (data / "notes.txt").write_text("not a CT")
    outside = tmp_path / "secret.nii.gz"
    outside.write_bytes(b"x")
    os.symlink(outside, data / "link.nii.gz")
    os.symlink(tmp_path, data / "up")
    assert list_cases(data.resolve()) == ["ct.nii.gz", "series/"]
    assert case_path(data.resolve(), "ct.nii.gz") == (data / "ct.nii.gz").resolve()
    for name in ("../secret.nii.gz", "link.nii.gz", "up/secret.nii.gz", str(outside), "notes.txt"):
        with pytest.raises(InputError):
            case_path(data.resolve(), name)


def test_serve_refuses_bad_arguments_with_exit_2(tmp_path, capsys):
    assert cli_main(["serve", "--data", str(tmp_path / "missing")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert cli_main(["serve", "--data", str(tmp_path), "--host", "0.0.0.0", "--token", "short"]) == 2
    assert cli_main(["serve", "--port", "70000"]) == 2
