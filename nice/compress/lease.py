"""One writer per destination: a lease object at DST, taken with a conditional create.

The lease is a sequence of generation objects `_nice/lease/<generation>.json`; the newest one
is the lease. Taking it means creating the *next* generation with a conditional create
(`If-None-Match: *` on S3, an exclusive hard link on a folder), so of two processes that try
at once exactly one succeeds, whether the lease was free, released or stale. The holder
renews its generation every `ttl / 4` seconds; a generation not renewed for `ttl` seconds is
stale and may be taken over. A holder that finds a newer generation has lost the lease and
stops before its next commit (`check`).

A lease belongs to an archive run id: the plan, shards and finish of one fanned-out run
(same run id, separate pods) *join* it instead of competing; finish releases it. Staleness
compares the holder's wall clock with the reader's, so hosts need synchronised clocks (NTP);
the margin is the whole `ttl`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass

from nice.storage import Store

log = logging.getLogger(__name__)
PREFIX = "_nice/lease/"
DEFAULT_TTL = 300.0


class LeaseHeld(RuntimeError):
    """Another run holds DST's lease (the CLI prints it as one line and exits 2)."""

    def __init__(self, uri: str, record: LeaseRecord, now: float) -> None:
        age = max(0.0, now - record.renewed_at)
        super().__init__(
            f"{uri} is in use by archive run {record.run_id or '(starting)'} ({record.holder}, lease renewed "
            f"{age:.0f} s ago, stale after {record.ttl_s:.0f} s without renewal); rerun with --wait to queue "
            "behind it")
        self.record = record


class LeaseLost(RuntimeError):
    """Our lease was taken over (we stopped renewing for longer than its ttl): stop writing."""


@dataclass
class LeaseRecord:
    run_id: str
    holder: str  # host:pid of the process that took or last renewed it
    token: str  # unique per taking process: tells our own create from another's
    generation: int
    acquired_at: float
    renewed_at: float
    ttl_s: float
    released: bool = False

    def stale(self, now: float) -> bool:
        return now - self.renewed_at > self.ttl_s

    def free(self, now: float) -> bool:
        return self.released or self.stale(now)


def _key(generation: int) -> str:
    return f"{PREFIX}{generation:012d}.json"


class Lease:
    """DST's lease for one run. `acquire` (or `join` for a step of a run that holds it), then
    `start_renewing`; `check` before each commit; `release` at the end of the run."""

    def __init__(self, store: Store, run_id: str, ttl: float = DEFAULT_TTL,
                 clock: Callable[[], float] = time.time) -> None:
        if ttl <= 0:
            raise ValueError("lease time must be > 0 seconds")
        self.store, self.run_id, self.ttl, self.clock = store, run_id, ttl, clock
        self.token = uuid.uuid4().hex
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self.record: LeaseRecord | None = None
        self.lost: str | None = None  # why the lease was lost, once it is
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- reading ------------------------------------------------------------------------
    def current(self) -> tuple[int, LeaseRecord | None]:
        """The newest generation and its record (0, None when DST never had a lease)."""
        gens = sorted(int(o.key[len(PREFIX):-5]) for o in self.store.list(PREFIX)
                      if o.key.endswith(".json") and o.key[len(PREFIX):-5].isdigit())
        if not gens:
            return 0, None
        try:
            data = json.loads(self.store.get(_key(gens[-1])))
            return gens[-1], LeaseRecord(**data)
        except FileNotFoundError:  # cleaned up under us: read again
            return self.current()
        except (ValueError, TypeError):  # not ours or damaged: treat as stale, so it can be taken
            return gens[-1], LeaseRecord("", "unreadable lease", "", gens[-1], 0.0, 0.0, self.ttl)

    # -- taking -------------------------------------------------------------------------
    def acquire(self, wait: bool = False, join: bool = False, poll: float | None = None,
                on_wait: Callable[[LeaseRecord], None] | None = None) -> LeaseRecord:
        """Take DST's lease; `join`: also accept a live lease of the same run id (a step of a
        fanned-out run). Held by another run: raise LeaseHeld, or with `wait` poll until it is
        released or stale."""
        poll = poll if poll is not None else min(5.0, max(0.2, self.ttl / 4))
        while True:
            gen, rec = self.current()
            now = self.clock()
            if rec is not None and join and rec.run_id == self.run_id and not rec.free(now):
                self.record = LeaseRecord(**{**asdict(rec), "holder": self.holder, "renewed_at": now})
                self._write()
                log.info("joined the lease of run %s (generation %d)", self.run_id, gen)
                return self.record
            if rec is None or rec.free(now):
                mine = LeaseRecord(self.run_id, self.holder, self.token, gen + 1, now, now, self.ttl)
                if self.store.put_if_absent(_key(gen + 1), json.dumps(asdict(mine)).encode()):
                    if rec is not None and not rec.released:
                        log.warning("took over the stale lease of run %s (%s, not renewed for %.0f s)",
                                    rec.run_id, rec.holder, now - rec.renewed_at)
                    self.record = mine
                    self._clean(gen + 1)
                    return mine
                continue  # another process created that generation first: look again
            if not wait:
                raise LeaseHeld(self.store.uri, rec, now)
            if on_wait is not None:
                on_wait(rec)
            time.sleep(poll)

    def set_run(self, run_id: str) -> None:
        """Name the run once it is known (a run that resumes picks its id under the lease)."""
        self.run_id = run_id
        if self.record is not None:
            self.record.run_id = run_id
            self._write()

    # -- holding ------------------------------------------------------------------------
    def renew(self) -> None:
        """Write a fresh `renewed_at`, unless a newer generation exists (then the lease is lost)."""
        if self.record is None or self.lost:
            return
        gen = self.record.generation
        if self.store.exists(_key(gen + 1)):
            self.lost = f"the lease of {self.store.uri} was taken over (generation {gen + 1})"
            log.error("%s", self.lost)
            return
        self.record.renewed_at = self.clock()
        self._write()

    def check(self) -> None:
        """Raise LeaseLost when a newer holder took over, or when we could not renew for a ttl."""
        if self.record is not None and not self.lost and self.clock() - self.record.renewed_at > self.ttl:
            self.lost = f"the lease of {self.store.uri} was not renewed for {self.ttl:.0f} s"
        if self.lost:
            raise LeaseLost(self.lost)

    def start_renewing(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._renew_loop, name="nice-lease", daemon=True)
            self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(max(0.1, self.ttl / 4)):
            try:
                self.renew()
            except Exception as exc:  # noqa: BLE001 - a failed renewal is retried; check() times it out
                log.warning("lease renewal failed: %s: %s", type(exc).__name__, exc)

    def stop_renewing(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def release(self) -> None:
        """Mark our generation released (kept, so the last holder stays readable)."""
        self.stop_renewing()
        if self.record is None or self.lost or self.store.exists(_key(self.record.generation + 1)):
            return
        self.record.released = True
        self.record.renewed_at = self.clock()
        self._write()
        self.record = None

    # -- pieces -------------------------------------------------------------------------
    def _write(self) -> None:
        assert self.record is not None
        self.store.put(_key(self.record.generation), json.dumps(asdict(self.record)).encode())

    def _clean(self, keep: int) -> None:
        """Older generations are history: delete them (the listing stays one object long)."""
        for o in list(self.store.list(PREFIX)):
            stem = o.key[len(PREFIX):-5]
            if stem.isdigit() and int(stem) < keep:
                try:
                    self.store.delete(o.key)
                except Exception as exc:  # noqa: BLE001 - harmless leftovers
                    log.info("could not delete old lease %s: %s", o.key, exc)
