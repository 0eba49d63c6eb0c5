"""Many workers on one study: a lock per study, heartbeats and stale trials.

Workers share nothing but the study storage. Three things keep them apart:

- :func:`study_lock` serialises the short step in which a worker counts the
  study's trials, enqueues missing presets and takes its next trial, so
  presets are enqueued once and ``--trials`` is a total over all workers.
- :class:`Heartbeat` records, from a background thread, that a running trial
  is alive.
- :func:`fail_stale_trials` marks failed, with a reason, every running trial
  whose heartbeat stopped (its worker was killed or its machine lost), and
  :func:`retry_once` enqueues its design again, once.

Heartbeats are wall-clock times written by the training worker and compared
with the sweeping worker's clock, so the machines of one study need clocks
kept in step (NTP); the default grace of minutes leaves room for small drift.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
import zlib
from collections.abc import Iterator
from pathlib import Path

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages.journal import JournalFileOpenLock
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "HEARTBEAT_ATTR",
    "Heartbeat",
    "fail_stale_trials",
    "remember_location",
    "retry_once",
    "study_lock",
]

logger = logging.getLogger("blocksearch")

#: System attribute holding the time (seconds since the epoch) of a running
#: trial's latest heartbeat.
HEARTBEAT_ATTR = "blocksearch:heartbeat"

# Location of each open storage, for lock files beside a journal or SQLite file.
_LOCATIONS: weakref.WeakKeyDictionary[optuna.storages.BaseStorage, str] = (
    weakref.WeakKeyDictionary()
)


def remember_location(storage: optuna.storages.BaseStorage, location: str) -> None:
    """Record the journal path or database URL that ``storage`` was opened from."""
    _LOCATIONS[storage] = location


@contextlib.contextmanager
def study_lock(storage: optuna.storages.BaseStorage, study_name: str) -> Iterator[None]:
    """Hold a lock on ``study_name`` that every worker on ``storage`` respects.

    A journal file or SQLite database is locked with a lock file beside it. A
    lock file left by a killed worker is broken after 30 s. PostgreSQL uses
    an advisory lock of the server, which ends with the connection. Other
    databases get no lock, and a warning.
    """
    if isinstance(storage, optuna.storages.RDBStorage):
        dialect = storage.engine.dialect.name
        if dialect == "postgresql":
            with _advisory_lock(storage, study_name):
                yield
            return
        if dialect == "sqlite":
            database = storage.engine.url.database
            if database:
                with _file_lock(database, study_name):
                    yield
                return
        logger.warning(
            "storage %s has no lock that blocksearch knows; workers started at "
            "the same moment may enqueue a preset twice",
            storage.engine.url.render_as_string(hide_password=True),
        )
        yield
        return
    location = _LOCATIONS.get(storage)
    if location is None:
        yield  # an in-process storage: one worker, nothing to share
        return
    with _file_lock(location, study_name):
        yield


@contextlib.contextmanager
def _file_lock(path: str, study_name: str) -> Iterator[None]:
    # One lock file per storage, not per study: the step it guards is short.
    lock = JournalFileOpenLock(str(Path(path)) + ".blocksearch", grace_period=30)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def _advisory_lock(
    storage: optuna.storages.RDBStorage, study_name: str
) -> Iterator[None]:
    from sqlalchemy import text

    key = zlib.crc32(f"blocksearch:{study_name}".encode())
    with storage.engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})


class Heartbeat:
    """Records every ``interval`` seconds that a trial is still running.

    Use as a context manager around the trial's training; the thread stops,
    and writes nothing more, before the block ends.
    """

    def __init__(
        self, storage: optuna.storages.BaseStorage, trial_id: int, interval: float
    ) -> None:
        self.storage = storage
        self.trial_id = trial_id
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"heartbeat-{trial_id}", daemon=True
        )

    def __enter__(self) -> Heartbeat:
        self._beat()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._beat()
            except UpdateFinishedTrialError:
                return  # another worker judged the trial stale and failed it
            except Exception as error:  # a storage hiccup must not stop training
                logger.warning("heartbeat of trial id %d: %s", self.trial_id, error)

    def _beat(self) -> None:
        self.storage.set_trial_system_attr(self.trial_id, HEARTBEAT_ATTR, time.time())


def last_sign_of_life(trial: FrozenTrial) -> float:
    """Return when ``trial`` was last known alive, in seconds since the epoch."""
    beat = trial.system_attrs.get(HEARTBEAT_ATTR)
    if isinstance(beat, int | float):
        return float(beat)
    start = trial.datetime_start
    return start.timestamp() if start is not None else time.time()


def fail_stale_trials(study: optuna.Study, stale_after: float) -> list[FrozenTrial]:
    """Mark failed every running trial silent for ``stale_after`` seconds.

    Each gets the user attribute ``failure`` with the reason, and its design
    is enqueued again through :func:`retry_once`. Call it under
    :func:`study_lock`, so that one worker handles each stale trial.

    Returns:
        The trials marked failed, as they were before.
    """
    storage = study._storage
    now = time.time()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        silent = now - last_sign_of_life(trial)
        if silent < stale_after:
            continue
        reason = (
            f"stale: no heartbeat for {silent:.0f} s (limit {stale_after:g} s); "
            "its worker was killed or lost"
        )
        try:
            storage.set_trial_user_attr(trial._trial_id, "failure", reason)
            if not storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:
            continue  # it finished, or another worker failed it, a moment ago
        logger.warning(
            "%s trial %d: %s; marked failed", study.study_name, trial.number, reason
        )
        retry_once(study, trial)
        failed.append(trial)
    return failed


def retry_once(study: optuna.Study, trial: FrozenTrial) -> bool:
    """Enqueue ``trial``'s parameters again unless it was itself a retry.

    The new trial keeps the preset name or given design, if any, and records
    ``retry_of``.

    Returns:
        Whether a retry was enqueued.
    """
    if "retry_of" in trial.user_attrs:
        logger.warning(
            "%s trial %d was already a retry of trial %d; not retried again",
            study.study_name,
            trial.number,
            trial.user_attrs["retry_of"],
        )
        return False
    attrs: dict[str, object] = {"retry_of": trial.number}
    for kind in ("preset", "given"):
        if trial.user_attrs.get(kind):
            attrs[kind] = trial.user_attrs[kind]
    study.enqueue_trial(trial.params, user_attrs=attrs)
    logger.info(
        "%s: trial %d's design enqueued again, once", study.study_name, trial.number
    )
    return True
