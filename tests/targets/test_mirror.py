"""The shared cloud-folder download: complete files only, the marker last, same-size files kept."""

from __future__ import annotations

import pytest

from include.targets.cloud.mirror import mirror


def test_the_marker_comes_last_and_no_file_is_seen_half_written(tmp_path):
    seen = []

    def download(body: bytes, path):
        assert path.name.endswith(".part")  # written aside, renamed into place
        seen.append(sorted(p.name for p in tmp_path.rglob("*") if p.is_file() and not p.name.endswith(".part")))
        path.write_bytes(body)

    objects = [("model.json", 2, b"{}"), ("bundle/model.ubj", 3, b"abc"), ("a/", 0, b""), ("report.png", 1, b"p")]
    target = mirror(objects, tmp_path, download, last="model.json")
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()) == [
        "bundle/model.ubj", "model.json", "report.png"]  # the folder placeholder is no file
    assert "model.json" not in seen[-1] and len(seen) == 3  # the marker was downloaded after everything else


def test_same_size_files_are_kept_and_a_failed_download_leaves_no_final_file(tmp_path):
    (tmp_path / "kept.parquet").write_bytes(b"xyz")
    calls = []

    def download(body, path):
        calls.append(path.name)
        if body is None:
            path.write_bytes(b"trunc")
            raise ConnectionError("reset by peer")
        path.write_bytes(body)

    mirror([("kept.parquet", 3, b"new")], tmp_path, download)
    assert calls == [] and (tmp_path / "kept.parquet").read_bytes() == b"xyz"
    with pytest.raises(ConnectionError):
        mirror([("broken.parquet", 9, None)], tmp_path, download)
    assert not (tmp_path / "broken.parquet").exists()  # only the .part aside, never under the final name
