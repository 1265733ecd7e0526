"""geosam.utils.publish: an output appears whole or not at all, and replaces only with consent."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from geosam.utils.errors import GeosamError
from geosam.utils.publish import (
    check_writable,
    publish_dir,
    publish_files,
    refuse_existing_file,
    refuse_occupied,
    write_files,
)


class Boom(Exception):
    pass


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_publish_dir_appears_whole_with_the_users_umask(tmp_path: Path) -> None:
    target = tmp_path / "new" / "out"
    with publish_dir(target) as staging:
        assert staging.parent == target.parent and staging.name.startswith(".out.staging-")
        (staging / "a.txt").write_text("a")
        assert not target.exists()
    assert names(target) == ["a.txt"] and names(target.parent) == ["out"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o777 & ~umask


def test_publish_dir_replaces_only_a_whole_output(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(Boom), publish_dir(target) as staging:
        (staging / "half.txt").write_text("half")
        raise Boom
    assert names(tmp_path) == ["out"] and names(target) == ["old.txt"]
    with publish_dir(target) as staging:
        (staging / "new.txt").write_text("new")
    assert names(tmp_path) == ["out"] and names(target) == ["new.txt"]


def test_a_failed_new_output_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(Boom), publish_dir(tmp_path / "out") as staging:
        (staging / "half.txt").write_text("half")
        raise Boom
    assert names(tmp_path) == []


def test_publish_files_joins_a_folder_and_keeps_its_other_files(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.yaml").write_text("mine")
    (folder / "metrics.json").write_text("old")
    with pytest.raises(Boom), publish_files(folder) as staging:
        (staging / "metrics.json").write_text("half")
        raise Boom
    assert names(folder) == ["config.yaml", "metrics.json"]
    assert (folder / "metrics.json").read_text() == "old"
    paths = write_files(folder, {"metrics.json": lambda p: p.write_text("new")})
    assert paths == [folder / "metrics.json"] and (folder / "metrics.json").read_text() == "new"
    assert names(folder) == ["config.yaml", "metrics.json"]


def test_publish_files_into_a_new_folder_publishes_it_whole(tmp_path: Path) -> None:
    folder = tmp_path / "eval"
    with pytest.raises(Boom), publish_files(folder) as staging:
        (staging / "a.txt").write_text("a")
        raise Boom
    assert names(tmp_path) == []
    write_files(folder, {"a.txt": lambda p: p.write_text("a")})
    assert names(folder) == ["a.txt"] and names(tmp_path) == ["eval"]


def test_write_files_turns_a_write_error_into_one_line(tmp_path: Path) -> None:
    def fails(path: Path) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    with pytest.raises(GeosamError, match=r"cannot write to .*out: Permission denied"):
        write_files(tmp_path / "out", {"a.txt": fails})
    assert names(tmp_path) == []


def test_refuse_occupied(tmp_path: Path) -> None:
    refuse_occupied(tmp_path / "missing", overwrite=False)
    (tmp_path / "empty").mkdir()
    refuse_occupied(tmp_path / "empty", overwrite=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(GeosamError, match=r"-o .*full is not empty: .*--overwrite"):
        refuse_occupied(tmp_path / "full", overwrite=False, what="-o")
    refuse_occupied(tmp_path / "full", overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(GeosamError, match="is a file: give a folder"):
        refuse_occupied(tmp_path / "file", overwrite=True)


def test_refuse_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "model.pth"
    refuse_existing_file(target, overwrite=False)
    target.write_bytes(b"x")
    with pytest.raises(GeosamError, match="exists: pass --overwrite"):
        refuse_existing_file(target, overwrite=False)
    refuse_existing_file(target, overwrite=True)
    with pytest.raises(GeosamError, match="is a folder"):
        refuse_existing_file(tmp_path, overwrite=True)
    with pytest.raises(GeosamError, match="does not exist"):
        refuse_existing_file(tmp_path / "typo" / "model.pth", overwrite=False)


def test_check_writable(tmp_path: Path) -> None:
    check_writable(tmp_path / "a" / "b")
    (tmp_path / "file").write_text("x")
    with pytest.raises(GeosamError, match="is a file"):
        check_writable(tmp_path / "file" / "out")
    assert names(tmp_path) == ["file"]
