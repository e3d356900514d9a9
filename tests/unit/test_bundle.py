"""Deploy bundles: reproducible, content-hashed, without the credentials file."""

from __future__ import annotations

import io
import os
import tarfile

from worker.bundle import make_bundle, unpack_bundle


def test_bundle_is_reproducible_and_excludes_secrets(tmp_path):
    src = tmp_path / "c"
    (src / "sub").mkdir(parents=True)
    (src / "connector.py").write_text("x = 1\n")
    (src / "sub" / "data.csv").write_text("a\n")
    (src / "secret.txt").write_text("hunter2")
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "connector.cpython-311.pyc").write_bytes(b"\0")
    data, digest = make_bundle(src, [src / "secret.txt"])
    os.utime(src / "connector.py", (0, 12345))  # times do not change the hash
    assert make_bundle(src, [src / "secret.txt"]) == (data, digest)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == ["connector.py", "sub/data.csv"]
    (src / "connector.py").write_text("x = 2\n")
    assert make_bundle(src, [src / "secret.txt"])[1] != digest

    out = unpack_bundle(data, digest, tmp_path / "cache")
    assert (out / "sub" / "data.csv").read_text() == "a\n"
    assert unpack_bundle(data, digest, tmp_path / "cache") == out
