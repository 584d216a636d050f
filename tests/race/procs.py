"""Worker processes for the fault tests (spawned: module-level functions only)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from delivery_gate import DeliveryGate

from .harness import now


def hold_permit_forever(url: str, cid: str, ready: Any) -> None:
    """Enter an admitted permit, say so, and never leave it (until SIGKILLed)."""
    gate = DeliveryGate.open(url)
    with gate.permit(cid, "email") as p:
        assert p.admitted, p
        ready.set()
        while True:
            time.sleep(1)


def emit_and_flush(url: str, cid: str, ready: Any) -> None:
    """Emit and record results in a tight loop (holding the write lock often)."""
    gate = DeliveryGate.open(url)
    ready.set()
    while True:
        with gate.permit(cid, "email") as p:
            if p.admitted and p.still_valid():
                pass
        gate.flush()


def pause_inside_permit(url: str, cid: str, ready: Any, go: str, out: str) -> None:
    """Enter an admitted permit, wait for the file ``go`` (the parent SIGSTOPs us
    meanwhile), then make the last check and "send" only if it passes.

    A file, not an Event: setting a multiprocessing Event waits for its sleepers to wake,
    and a stopped process never does.
    """
    gate = DeliveryGate.open(url)
    with gate.permit(cid, "email") as p:
        admitted = p.admitted
        ready.set()
        while not Path(go).exists():
            time.sleep(0.001)
        valid = p.still_valid()
        sent_at = now() if valid else None
    gate.close()
    Path(out).write_text(json.dumps({"admitted": admitted, "valid": valid, "sent_at": sent_at}))


def answer_checks(url: str, cid: str) -> None:
    """A gate process that says its id, then answers each "check" line on stdin with its
    decision on ``cid`` (1 admitted, 0 denied), so a parent can stop and resume it between
    two questions."""
    import sys

    gate = DeliveryGate.open(url)
    print("ready", gate._gate_id, flush=True)
    for line in sys.stdin:
        if line.strip() == "check":
            print(int(gate.check(cid, "email").admitted), flush=True)
    gate.close()
