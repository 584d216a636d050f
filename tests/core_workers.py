"""Functions run in child processes by tests/test_sqlite.py (spawned: importable by name)."""

from __future__ import annotations

import resource
import signal
from collections.abc import Callable
from typing import Any

from campaign_states import FakeClock, Registry
from campaign_states.exceptions import CampaignStateError
from campaign_states.stores import SQLiteStore


def _deferred_begin() -> None:
    """Break the store on purpose: a deferred BEGIN instead of BEGIN IMMEDIATE."""
    from campaign_states._stores.sqlite import tx as _sqlite

    def enter(self: Any) -> Any:
        store = self._store
        store._lock.acquire()
        store._conn.execute("BEGIN")
        return _sqlite._Tx(store._conn)

    _sqlite.Write.__enter__ = enter  # type: ignore[method-assign]


def race(
    path: str, trigger: str, ids: list[str], *, barrier: Any, broken: bool, queue: Any, index: int
) -> None:
    """Fire ``trigger`` on each id as fast as possible; put each outcome or error on queue."""
    if broken:
        _deferred_begin()
    # A fake clock: the archives' commit wait (about 0.55 s each) is not what races here.
    store = SQLiteStore(path, busy_timeout=30.0, clock=FakeClock())
    reg = Registry(store)
    out: list[Any] = []
    barrier.wait()
    for cid in ids:
        try:
            out.append(("changed" if getattr(reg, trigger)(cid).changed else "unchanged", None))
        except CampaignStateError as e:
            out.append(("refused", type(e).__name__))
        except Exception as e:  # a foreign exception: the checker reports it
            out.append(("foreign", f"{type(e).__name__}: {e}"))
    store.close()
    queue.put((index, out))


def _attempt(call: Callable[[], object]) -> tuple[str, str]:
    """What ``call`` raised, as (type name, message); a foreign one's name says so."""
    try:
        call()
    except CampaignStateError as e:
        return (type(e).__name__, str(e))
    except Exception as e:
        return ("foreign " + type(e).__name__, str(e))
    return ("no error", "")


def write_past_file_limit(path: str, limit: int, content_size: int) -> tuple[str, str]:
    """Under RLIMIT_FSIZE, try to create a campaign too big to fit; report the error."""
    # The kernel sends SIGXFSZ (default: kill the process) on a write past the limit;
    # ignored, the write fails with EFBIG instead, which SQLite reports.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    store = SQLiteStore(path)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    reg = Registry(store, content_limit=content_size)  # the disk refuses it, not the limit
    try:
        return _attempt(
            lambda: reg.create_campaign(
                name="big", channels=["email"], content="x" * content_size, campaign_id="big"
            )
        )
    finally:
        store.close()


class _FillsDiskWhileWaiting(FakeClock):
    """A clock whose sleep (set_lease_settings' wait between its two writes) fills the disk:
    any write past byte 1 of any file now fails with EFBIG."""

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))


def lease_change_on_full_disk(path: str) -> tuple[str, str, dict[str, float]]:
    """set_lease_settings with the disk full after its first write; report the error and
    the settings the store holds (read once the limit is lifted)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    store = SQLiteStore(path, clock=_FillsDiskWhileWaiting())
    reg = Registry(store)
    try:
        result = _attempt(lambda: reg.set_lease_settings(lease=0.3, grace=0.02, refresh=0.03))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
        store.close()
    reopened = SQLiteStore(path)
    try:
        held = reopened.lease_settings()
    finally:
        reopened.close()
    return (*result, {"lease": held.lease, "previous_wait": held.previous_wait})
