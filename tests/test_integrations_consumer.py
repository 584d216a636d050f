"""`gated`: consumer loops decide each record, hold its permit while the body runs, and
report denied records so their offsets can be committed."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from campaign_states import open_registry
from delivery_gate import DeliveryGate, Permit, Reason
from delivery_gate.integrations import gated


class Record:
    """A consumer record's shape (aiokafka's ConsumerRecord has these and more)."""

    def __init__(self, offset, campaign_id, channel):
        self.offset = offset
        self.value = {"campaign_id": campaign_id, "channel": channel}


def key(r):
    return r.value["campaign_id"], r.value["channel"]


@pytest.fixture
def setup():
    reg = open_registry("memory://")
    run = reg.create_campaign(name="r", channels={"email"}, campaign_id="c-run")
    gone = reg.create_campaign(name="g", channels={"email"}, campaign_id="c-gone")
    reg.resume_many([run.id, gone.id])
    reg.archive(gone.id)
    gate = DeliveryGate(reg)
    yield reg, gate
    gate.close()
    reg.close()


def naive_gated(gate, records, key, on_denied=None) -> Iterator[tuple[object, Permit]]:
    """Deliberately broken: decides with a permit but leaves it before the body runs."""
    for r in records:
        with gate.permit(*key(r)) as p:
            ok = p.admitted
        if ok:
            yield r, p
        elif on_denied:
            on_denied(r, p.decision)


class TestSync:
    """A sync loop: admitted records under a permit, denied ones reported in order."""

    def test_admits_reports_and_counts(self, setup):
        reg, gate = setup
        records = [
            Record(0, "c-run", "email"),
            Record(1, "c-gone", "email"),
            Record(2, "c-run", "sms"),
            Record(3, "c-run", "email"),
            "not a record",
        ]
        sent, denied = [], []
        for record, permit in gated(
            gate, records, key=key, on_denied=lambda r, d: denied.append((r, d.reason))
        ):
            assert permit.admitted
            assert permit.still_valid()
            sent.append(record.offset)
        assert [0, 3] == sent
        assert [
            (records[1], Reason.ARCHIVED),
            (records[2], Reason.CHANNEL_NOT_ENABLED),
            (records[4], Reason.INVALID_REQUEST),
        ] == denied
        gate.flush()
        assert 2 == reg.results("c-run").total

    def test_the_permit_is_held_while_the_body_runs(self, setup):
        """An archive started in the body waits until the body asks for the next record."""
        reg, gate = setup
        archiver = None
        for _record, _permit in gated(gate, [("c-run", "email")]):
            archiver = threading.Thread(target=reg.archive, args=("c-run",))
            archiver.start()
            archiver.join(0.3)
            assert archiver.is_alive(), "the archive returned while the send was in flight"
        archiver.join(30)
        assert not archiver.is_alive()

    def test_the_check_catches_a_helper_that_leaves_the_permit_early(self, setup):
        reg, gate = setup
        for _record, _permit in naive_gated(gate, [("c-run", "email")], key=lambda r: r):
            archiver = threading.Thread(target=reg.archive, args=("c-run",))
            archiver.start()
            archiver.join(30)
            assert not archiver.is_alive()  # nothing held it: the send is unprotected

    def test_a_failing_body_is_not_counted(self, setup):
        reg, gate = setup

        def consume():
            for _record, _permit in gated(gate, [("c-run", "email")]):
                raise RuntimeError("send failed")

        with pytest.raises(RuntimeError):
            consume()
        gate.flush()
        assert 0 == reg.results("c-run").total
        assert not gate._live

    def test_cancel_skips_the_count(self, setup):
        reg, gate = setup
        for _record, permit in gated(gate, [("c-run", "email")] * 3):
            permit.cancel()
        gate.flush()
        assert 0 == reg.results("c-run").total

    def test_bad_arguments(self, setup):
        _reg, gate = setup
        with pytest.raises(TypeError):
            gated(object(), [])  # type: ignore[call-overload]
        with pytest.raises(TypeError):
            gated(gate, 42)  # type: ignore[call-overload]
        with pytest.raises(TypeError):
            gated(gate, [], key="campaign_id")  # type: ignore[call-overload]


class FakeConsumer:
    """aiokafka's AIOKafkaConsumer shape: ``async for`` over records, ``await commit()``."""

    def __init__(self, records):
        self._records = list(records)
        self.committed: list[int] = []

    def __aiter__(self):
        return self

    async def __anext__(self):
        await asyncio.sleep(0)
        if not self._records:
            raise StopAsyncIteration
        return self._records.pop(0)

    async def commit(self, offset):
        await asyncio.sleep(0)
        self.committed.append(offset)


class TestAsync:
    """An async loop: the same, with an awaited denial callback."""

    def test_async_loop_commits_every_offset(self, setup):
        reg, gate = setup
        consumer = FakeConsumer(
            [Record(0, "c-run", "email"), Record(1, "c-gone", "email"), Record(2, "c-run", "email")]
        )

        async def skipped(record, decision):
            await consumer.commit(record.offset)

        async def main():
            sent = []
            async for record, permit in gated(gate, consumer, key=key, on_denied=skipped):
                assert permit.still_valid()
                await asyncio.sleep(0)  # the send
                sent.append(record.offset)
                await consumer.commit(record.offset)
            return sent

        assert [0, 2] == asyncio.run(main())
        assert [0, 1, 2] == consumer.committed
        gate.flush()
        assert 2 == reg.results("c-run").total

    def test_many_tasks_share_a_gate(self, setup):
        reg, gate = setup

        async def loop(n):
            sent = 0
            async for _r, _p in gated(gate, FakeConsumer([("c-run", "email")] * n)):
                await asyncio.sleep(0)
                sent += 1
            return sent

        async def main():
            return await asyncio.gather(*(loop(50) for _ in range(10)))

        assert [50] * 10 == asyncio.run(main())
        gate.flush()
        assert 500 == reg.results("c-run").total


class TestShutdownMidSend:
    """A gate closed while a loop's send is in flight waits for it, then denies the rest."""

    def test_aclose_waits_for_the_send_then_denies(self, setup):
        reg, gate = setup
        consumer = FakeConsumer([Record(i, "c-run", "email") for i in range(3)])
        denied = []

        async def main():
            closing = None
            sent = []
            async for record, _permit in gated(
                gate, consumer, key=key, on_denied=lambda r, d: denied.append((r.offset, d.reason))
            ):
                sent.append(record.offset)
                closing = asyncio.create_task(gate.aclose())
                await asyncio.sleep(0.05)
                assert not closing.done()  # waits for this send
            await closing
            return sent

        assert [0] == asyncio.run(main())
        assert [(1, Reason.STORE_UNAVAILABLE), (2, Reason.STORE_UNAVAILABLE)] == denied
        assert 1 == reg.results("c-run").total
