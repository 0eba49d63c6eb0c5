"""Study storage (journal files or databases) and the names of studies.

The default storage is an Optuna journal file, ``studies/<space>.journal``: it
takes appends from several processes under a file lock, and optuna-dashboard
reads it while a run is writing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import optuna

from blocksearch.coordination import remember_location
from blocksearch.errors import StudyError
from blocksearch.space import Space

__all__ = [
    "check_storage",
    "default_storage_path",
    "open_storage",
    "shown_location",
    "study_depths",
    "study_name",
]


def study_name(space: Space | str, depth: int) -> str:
    """Return the study name of ``space`` at ``depth``: ``<space>-depth<N>``."""
    name = space if isinstance(space, str) else space.name
    return f"{name}-depth{depth}"


def default_storage_path(space: Space, studies_dir: str | Path = "studies") -> Path:
    """Return the default journal file for the studies of ``space``."""
    return Path(studies_dir) / f"{space.name}.journal"


_SQLITE_HEADER = b"SQLite format 3\x00"


def check_storage(location: str | Path) -> None:
    """Reject a storage location that cannot hold studies, without writing to it.

    Raises:
        StudyError: If a database URL names an in-memory database, or a
            journal path is a folder, another kind of file, or a journal whose
            last record is incomplete.
    """
    location = str(location)
    if "://" in location:
        if location.rstrip("/") in ("sqlite:", "sqlite:/") or ":memory:" in location:
            raise StudyError(
                f"storage {location!r} is an in-memory database, so the studies "
                "would be lost when the run ends; give a file, e.g. "
                "sqlite:///studies/x.db"
            )
        return
    path = Path(location)
    if path.is_dir():
        raise StudyError(
            f"storage {location!r} is a folder; give a journal file path such as "
            f"{str(path / 'studies.journal')!r}"
        )
    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        with path.open("rb") as file:
            head = file.read(len(_SQLITE_HEADER))
            file.seek(0)
            first_line = file.readline()
            file.seek(-1, 2)
            last_byte = file.read(1)
    except OSError as error:
        raise StudyError(
            f"cannot read storage file {location!r}: {error.strerror}"
        ) from None
    if head == _SQLITE_HEADER:
        raise StudyError(
            f"storage file {location!r} is an SQLite database; pass it as a URL: "
            f"--storage sqlite:///{path}"
        )
    try:
        record = json.loads(first_line)
    except ValueError:
        record = None
    if not isinstance(record, dict) or "op_code" not in record:
        raise StudyError(
            f"storage file {location!r} is not an Optuna journal file; blocksearch "
            "does not write to it. Pass --storage with a new or journal file"
        )
    if last_byte != b"\n":
        raise StudyError(
            f"storage file {location!r} ends with an incomplete record, left by "
            "a write that was cut off; appending would damage it. Keep a copy, "
            "then delete the text after the last line break"
        )


def shown_location(location: str | Path) -> str:
    """Return ``location`` fit for messages and logs: without a URL's password."""
    location = str(location)
    if "://" not in location:
        return location
    try:
        from sqlalchemy.engine import make_url

        return make_url(location).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can read, e.g. a bad port
        # user:password@ as in RFC 3986; the password may contain ':'
        return re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:***@", location)


def _first_line(error: Exception) -> str:
    """Return the first line of a driver's message, without its class prefix."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    text = lines[0].strip().rstrip(".")
    if text.startswith("(") and ") " in text:
        text = text.split(") ", 1)[1]  # "(psycopg.OperationalError) ..."
    return text


def open_storage(location: str | Path) -> optuna.storages.BaseStorage:
    """Open study storage from a database URL or a journal file path.

    ``location`` is either a SQLAlchemy URL such as ``sqlite:///studies.db`` or
    ``postgresql://user@host/db``, or the path of an Optuna journal file, which
    is created with its folder when missing. The location is checked with
    :func:`check_storage` first.

    Raises:
        StudyError: If the location fails the checks, the URL is malformed,
            the database cannot be reached, or the journal file cannot be
            created.
    """
    check_storage(location)
    location = str(location)
    if "://" in location:
        shown = shown_location(location)
        try:
            storage = optuna.storages.RDBStorage(location)
        except ImportError:
            scheme = location.split("://", 1)[0]
            fix = (
                "pip install 'blocksearch[postgres]'"
                if scheme.startswith("postgresql")
                else f"install the Python driver of {scheme!r} databases"
            )
            raise StudyError(
                f"cannot open storage {shown!r}: its database driver is not "
                f"installed; {fix}"
            ) from None
        except Exception as error:  # SQLAlchemy raises many unrelated types
            raise StudyError(
                f"cannot open storage {shown!r}: {_first_line(error)}. Check the URL "
                "(e.g. sqlite:///studies/x.db) and that the server is reachable"
            ) from None
        remember_location(storage, location)
        return storage

    path = Path(location)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(str(path))
    except OSError as error:
        raise StudyError(
            f"cannot create storage file {str(path)!r}: {error.strerror}. "
            "Choose a writable location with --storage or --studies-dir"
        ) from None
    storage = optuna.storages.JournalStorage(backend)
    remember_location(storage, location)
    return storage


def study_depths(storage: optuna.storages.BaseStorage, space: Space) -> list[int]:
    """Return the depths of the studies of ``space`` in ``storage``, sorted."""
    prefix = f"{space.name}-depth"
    depths = []
    for name in optuna.get_all_study_names(storage):
        suffix = name[len(prefix) :]
        if name.startswith(prefix) and suffix.isdigit():
            depths.append(int(suffix))
    return sorted(depths)
