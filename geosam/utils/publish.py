"""Publishing an output: all of it or nothing, and never over a user's files by surprise.

Every command that writes (tile, train, evaluate, export-onnx, export-checkpoint, demo) follows
the same two rules, so a failed or interrupted command leaves no half-written output where the
next stage would find it:

* **refuse before the work**: an output that already holds something is replaced only with
  ``--overwrite`` (:func:`refuse_occupied`, :func:`refuse_existing_file`), and an output that
  cannot be created fails at once (:func:`check_writable`), not after hours of work;
* **write aside, then rename**: the output is written into a hidden staging folder beside it
  (same file system, so the rename is atomic) and renamed into place only when complete
  (:func:`publish_dir`); an existing output is replaced only once the new one is whole.
  :func:`publish_files` does the same for files that join a folder which may hold others,
  and :func:`publish_file` for one file rewritten in place (metrics.json, trained weights).

The staging folder is made with a plain ``mkdir`` (not ``mkdtemp``'s 0700), so the published
folder gets the user's umask like any other.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from geosam.utils.errors import GeosamError


def refuse_occupied(
    path: Path,
    overwrite: bool,
    *,
    what: str = "output folder",
    state: str = "is not empty",
    hint: str = "choose another or pass --overwrite to replace it",
) -> None:
    """Refuse a file where a folder goes, and a non-empty folder unless ``overwrite``.

    ``what`` names the output as the user gave it (``-o``, "output folder"), ``state`` and
    ``hint`` say what is there and what to do: ``f"{what} {path} {state}: {hint}"``.
    """
    if path.exists() and not path.is_dir():
        raise GeosamError(f"{what} {path} is a file: give a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise GeosamError(f"{what} {path} {state}: {hint}")


def refuse_existing_file(path: Path, overwrite: bool, what: str = "-o") -> None:
    """Refuse an existing file unless ``overwrite``, a folder in its place, and a file in a
    folder that does not exist (a typo in the path should not create folders)."""
    if path.is_dir():
        raise GeosamError(f"{what} {path} is a folder: give a file name")
    if path.exists() and not overwrite:
        raise GeosamError(f"{path} exists: pass --overwrite to replace it")
    if not path.parent.is_dir():
        raise GeosamError(f"folder {path.parent} of {what} {path} does not exist")


def check_writable(path: Path) -> None:
    """Fail before the work, not after, when the folder ``path`` cannot be created: its
    nearest existing ancestor must be a writable folder."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise GeosamError(f"cannot write to {path}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise GeosamError(f"cannot write to {path}: {existing} is not writable; choose another")


@contextmanager
def publish_dir(target: Path) -> Iterator[Path]:
    """A new hidden folder beside ``target`` to write the output into; when the block
    succeeds it becomes ``target`` (replacing an existing one only then), when it fails it is
    removed."""
    staging = _hidden_dir(target.parent, target.name, "staging")
    try:
        yield staging
        _swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextmanager
def publish_files(folder: Path) -> Iterator[Path]:
    """A hidden folder to write files into; when the block succeeds, each replaces its
    namesake in ``folder`` (which may hold other files, kept), when it fails ``folder`` is
    unchanged. A ``folder`` that does not exist yet is published whole."""
    if not folder.exists():
        with publish_dir(folder) as staging:
            yield staging
        return
    staging = _hidden_dir(folder, folder.name, "staging")
    try:
        yield staging
        for part in sorted(staging.iterdir()):
            _rename(part, folder / part.name, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def publish_file(target: Path) -> Iterator[Path]:
    """A hidden path beside ``target`` to write one file to; when the block succeeds it
    replaces ``target`` in one rename, so a reader (or a kill) never sees it half-written; when
    it fails it is removed. ``target``'s folder is created if needed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _hidden_name(target.parent, target.name, "staging")
    try:
        yield staging
        _rename(staging, target, target)
    finally:
        staging.unlink(missing_ok=True)


def write_files(folder: Path, writers: Mapping[str, Callable[[Path], None]]) -> list[Path]:
    """Write each file through ``writers[name](path)`` and publish them together into
    ``folder`` (:func:`publish_files`); returns their published paths."""
    try:
        with publish_files(folder) as staging:
            for name, write in writers.items():
                write(staging / name)
    except OSError as exc:
        raise GeosamError(f"cannot write to {folder}: {exc.strerror or exc}") from None
    return [folder / name for name in writers]


def reset_dir(path: Path) -> None:
    """An empty folder at ``path``, removing what :func:`refuse_occupied` allowed to replace.

    For outputs that cannot be staged because what is written inside records its own final
    paths (the demo's run folder and model record where they were trained and exported)."""
    if path.exists():
        shutil.rmtree(path)
    try:
        path.mkdir(parents=True)
    except OSError as exc:
        raise GeosamError(f"cannot write to {path}: {exc.strerror}") from None


def _hidden_name(parent: Path, name: str, role: str) -> Path:
    """A unique hidden path ``.<name>.<role>-<id>`` in ``parent``, for one output's staging
    or its replaced predecessor (unique: two commands may publish beside each other)."""
    return parent / f".{name}.{role}-{uuid.uuid4().hex[:8]}"


def _hidden_dir(parent: Path, name: str, role: str) -> Path:
    path = _hidden_name(parent, name, role)
    try:
        path.mkdir(parents=True)
    except OSError as exc:
        raise GeosamError(f"cannot write to {parent}: {exc.strerror}") from None
    return path


def _swap_into_place(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``; an existing ``target`` is moved aside first and
    removed only after the new one is in place (put back if that rename fails)."""
    if not target.exists():
        _rename(staging, target, target)
        return
    old = _hidden_name(target.parent, target.name, "old")
    _rename(target, old, target)
    try:
        _rename(staging, target, target)
    except GeosamError:
        old.rename(target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _rename(source: Path, destination: Path, output: Path) -> None:
    try:
        os.replace(source, destination)
    except OSError as exc:
        raise GeosamError(f"cannot write to {output}: {exc.strerror}") from None
