"""Field locks in the dataset's MongoDB, so that two runs never write one field at once.

A lock is one document per (dataset, field), created atomically. The shards
of one run share its key and may hold it together; any other run is refused
while a holder is alive. A holder is alive while its heartbeat is fresh and,
on the same host, while its process exists, so a killed run's lock is taken
over by the next run without any manual step.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import fiftyone.core.odm as foo
from pymongo.errors import DuplicateKeyError

from fiftyone_florence2.core.errors import FieldLockedError

COLLECTION = "florence2_locks"
HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 300.0


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def _collection():
    return foo.get_db_conn()[COLLECTION]


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_alive(holder: dict, now: datetime.datetime, stale_seconds: float = STALE_SECONDS) -> bool:
    """Whether a lock holder still runs: a fresh heartbeat, and its process, when on this host."""
    if holder.get("host") == socket.gethostname() and not _process_exists(int(holder.get("pid", -1))):
        return False
    heartbeat = holder.get("heartbeat")
    return heartbeat is not None and (now - heartbeat).total_seconds() < stale_seconds


def holder_text(current: dict, holder: dict) -> str:
    """Where and since when a lock's holder runs: ``host h, pid p, since ...``."""
    return f"host {holder['host']}, pid {holder['pid']}, since {current['since']:%Y-%m-%d %H:%M:%S} UTC"


def live_holders(lock_id: str, stale_seconds: float = STALE_SECONDS) -> tuple[dict | None, list[dict]]:
    """A lock's document (None when free) and its holders that still run."""
    current = _collection().find_one({"_id": lock_id})
    if current is None:
        return None, []
    now = _now()
    return current, [h for h in current.get("holders", {}).values() if holder_alive(h, now, stale_seconds)]


class FieldLocks:
    """Holds the locks of one run on some fields of a dataset, with a heartbeat thread."""

    def __init__(self, dataset_id: str, fields: Iterable[str], run_key: str, stale_seconds: float = STALE_SECONDS):
        self.ids = [f"{dataset_id}:{field}" for field in sorted(set(fields))]
        self.run_key = run_key
        self.stale_seconds = stale_seconds
        self.holder = uuid.uuid4().hex
        self.taken_over: list[dict] = []  # locks whose holders were all gone
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _me(self) -> dict:
        return {"host": socket.gethostname(), "pid": os.getpid(), "heartbeat": _now()}

    def acquire(self) -> None:
        """Takes every lock, or none: raises :class:`FieldLockedError` naming the other run."""
        taken = []
        try:
            for lock_id in self.ids:
                self._acquire_one(lock_id)
                taken.append(lock_id)
        except BaseException:
            self._release(taken)
            raise
        self._thread = threading.Thread(target=self._beat, name="florence2-lock-heartbeat", daemon=True)
        self._thread.start()

    def _acquire_one(self, lock_id: str) -> None:
        locks = _collection()
        me = {self.holder: self._me()}
        for _ in range(5):
            try:
                locks.insert_one({"_id": lock_id, "run_key": self.run_key, "holders": me, "since": _now()})
                return
            except DuplicateKeyError:
                pass
            current = locks.find_one({"_id": lock_id})
            if current is None:
                continue
            if current["run_key"] == self.run_key:
                if locks.update_one(
                    {"_id": lock_id, "run_key": self.run_key}, {"$set": {f"holders.{self.holder}": me[self.holder]}}
                ).matched_count:
                    return
                continue
            now = _now()
            alive = [h for h in current.get("holders", {}).values() if holder_alive(h, now, self.stale_seconds)]
            if alive:
                raise FieldLockedError(self.refusal(lock_id.split(":", 1)[1], current, alive[0]))
            # Every holder is gone: take the lock over, unless someone else just did.
            if locks.delete_one(
                {"_id": lock_id, "run_key": current["run_key"], "since": current["since"]}
            ).deleted_count:
                self.taken_over.append(current)
        raise FieldLockedError(f"Could not lock {lock_id!r}: it changed hands too often.")

    def refusal(self, name: str, current: dict, holder: dict) -> str:
        """The one line that refuses a run because a live ``holder`` of ``current`` holds ``name``."""
        return (
            f"Field {name!r} is being written by run {current['run_key']!r} ({holder_text(current, holder)}). "
            "Wait for it to finish, or write to another field."
        )

    def note_record(self, record_key: str) -> None:
        """Notes the run record this holder writes, so that whoever takes a dead lock over can close it."""
        _collection().update_many({"_id": {"$in": self.ids}}, {"$set": {f"holders.{self.holder}.record": record_key}})

    def abandoned_records(self) -> list[str]:
        """The run records of the dead holders whose locks were taken over."""
        records = {h.get("record") for doc in self.taken_over for h in doc.get("holders", {}).values()}
        return sorted(r for r in records if r)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            # A missed beat is retried; the run itself must go on.
            with contextlib.suppress(Exception):
                _collection().update_many(
                    {"_id": {"$in": self.ids}}, {"$set": {f"holders.{self.holder}.heartbeat": _now()}}
                )

    def release(self) -> None:
        """Gives the locks back; the last holder removes them."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._release(self.ids)

    def _release(self, lock_ids: list[str]) -> None:
        locks = _collection()
        for lock_id in lock_ids:
            locks.update_one({"_id": lock_id}, {"$unset": {f"holders.{self.holder}": ""}})
            locks.delete_one({"_id": lock_id, "holders": {}})


@contextmanager
def locked(dataset, fields: Iterable[str], run_key: str) -> Iterator[FieldLocks]:
    """Holds the locks on ``fields`` of ``dataset`` for ``run_key`` while the block runs."""
    locks = FieldLocks(str(dataset._doc.id), fields, run_key)
    locks.acquire()
    try:
        yield locks
    finally:
        locks.release()


def list_locks(dataset) -> list[dict]:
    """The locks held on ``dataset``'s fields, with their run and holders."""
    prefix = f"{dataset._doc.id}:"
    return list(_collection().find({"_id": {"$regex": f"^{prefix}"}}))
