"""`AsyncRegistry`: the contract suite run through it on every store, the event loop never
blocked by a wait, and gates built on it."""

from __future__ import annotations

import asyncio
import inspect

import pytest

# The contract suite (tests/test_registry.py), collected again here with the `registry`
# fixture below: every call goes through an AsyncRegistry, awaited.
from test_registry import (  # noqa: F401
    TestArchivedIsReadOnly,
    TestBadInput,
    TestBulk,
    TestCreate,
    TestEdit,
    TestHistory,
    TestList,
    TestResults,
    TestSegmentArchive,
    TestSegmentUnarchive,
    TestTransitions,
)

from campaign_states import AsyncRegistry, Registry, open_async_registry, open_registry
from campaign_states.exceptions import (
    CampaignNotFoundError,
    DrainTimeoutError,
    InvalidSettingsError,
    InvalidTransitionError,
    StoreError,
)
from delivery_gate import DeliveryGate, Reason


class Blocking:
    """A `Registry`-shaped façade that awaits each call of an `AsyncRegistry` on a loop of
    its own: lets the synchronous contract suite drive the async one."""

    def __init__(self, areg: AsyncRegistry) -> None:
        self._areg = areg
        self._loop = asyncio.new_event_loop()

    def __getattr__(self, name):
        value = getattr(self._areg, name)
        if inspect.iscoroutinefunction(value):

            def call(*args, **kwargs):
                return self._loop.run_until_complete(value(*args, **kwargs))

            return call
        if name == "store":  # tests that reach into the store use the wrapped registry's
            return self._areg.registry.store
        return value

    @property
    def store(self):
        return self._areg.registry.store

    def close(self):
        self._loop.run_until_complete(self._areg.aclose())
        self._loop.close()


@pytest.fixture
def registry(make_store, clock):
    facade = Blocking(AsyncRegistry(Registry(make_store(clock=clock))))
    yield facade
    facade.close()


PUBLIC = [
    name
    for name, value in vars(Registry).items()
    # close is aclose; a gate's reader is the wrapped registry's (gates read on threads).
    if not name.startswith("_") and callable(value) and name not in ("close", "open_reader")
]


class TestSurface:
    """Every registry method has an awaited counterpart with the same parameters."""

    @pytest.mark.parametrize("name", PUBLIC)
    def test_same_method(self, name):
        sync = inspect.signature(getattr(Registry, name))
        ours = getattr(AsyncRegistry, name)
        plain = ("subscribe", "unsubscribe")
        assert inspect.iscoroutinefunction(ours) is (name not in plain)
        assert list(sync.parameters) == list(inspect.signature(ours).parameters)

    def test_async_context_manager_closes(self):
        async def main():
            async with open_async_registry("memory://") as areg:
                c = await areg.create_campaign(name="c", channels={"email"})
            with pytest.raises(StoreError, match="closed"):
                await areg.get(c.id)
            await areg.aclose()  # idempotent

        asyncio.run(main())

    def test_bad_url_opens_nothing(self):
        with pytest.raises(InvalidSettingsError):
            open_async_registry("nosuch://x")
        with pytest.raises(TypeError):
            AsyncRegistry(object())  # type: ignore[arg-type]
        with pytest.raises(InvalidSettingsError):
            AsyncRegistry(open_registry("memory://"), max_workers=0)

    def test_same_errors(self):
        async def main():
            async with open_async_registry("memory://") as areg:
                with pytest.raises(CampaignNotFoundError):
                    await areg.archive("c-missing")
                c = await areg.create_campaign(name="c", channels={"email"})
                await areg.archive(c.id)
                with pytest.raises(InvalidTransitionError):
                    await areg.resume(c.id)

        asyncio.run(main())


class BlockingOnTheLoop(AsyncRegistry):
    """Deliberately broken: runs each call on the event loop's own thread."""

    async def _run(self, fn, *args, **kwargs):
        return fn(*args, **kwargs)


async def archive_while_a_permit_is_held(areg):
    """A task on the loop holds a permit, lets the loop turn, then leaves its block; the
    archive must wait for it without stopping the loop (else it drains in vain)."""
    gate = DeliveryGate(areg)
    c = await areg.create_campaign(name="c", channels={"email"}, campaign_id="c-ä")
    await areg.resume(c.id)
    entered = asyncio.Event()

    async def send():
        with gate.permit(c.id, "email") as p:
            assert p.admitted
            entered.set()
            for _ in range(20):
                await asyncio.sleep(0.005)  # the send's awaits

    sender = asyncio.create_task(send())
    await entered.wait()
    try:
        try:
            result = await areg.archive(c.id)
        finally:
            await sender
        return result, gate.check(c.id, "email")
    finally:
        await gate.aclose()


@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgres"])
class TestNeverBlocksTheLoop:
    """An archive's drain and commit wait run off the loop: the loop keeps running."""

    def url(self, kind, tmp_path, request):
        if kind == "memory":
            return "memory://"
        if kind == "sqlite":
            return f"sqlite:///{tmp_path / 'a.db'}"
        return request.getfixturevalue("pg_dsn")

    def test_archive_waits_for_a_permit_held_on_the_loop(self, kind, tmp_path, request):
        async def main():
            async with open_async_registry(self.url(kind, tmp_path, request)) as areg:
                return await archive_while_a_permit_is_held(areg)

        result, denied = asyncio.run(main())
        assert result.changed
        assert Reason.ARCHIVED == denied.reason

    def test_the_check_catches_a_registry_that_blocks_the_loop(self, kind, tmp_path, request):
        async def main():
            reg = open_registry(self.url(kind, tmp_path, request), drain_timeout=0.2)
            areg = BlockingOnTheLoop(reg)
            try:
                return await archive_while_a_permit_is_held(areg)
            finally:
                await areg.aclose()

        with pytest.raises(DrainTimeoutError):
            asyncio.run(main())


class TestGateOnAsyncRegistry:
    """A gate built on an AsyncRegistry is fenced by its archives, across many tasks."""

    def test_many_tasks_archive_and_the_gate_denies(self, tmp_path):
        async def main():
            async with open_async_registry(f"sqlite:///{tmp_path / 'g.db'}") as areg:
                gate = DeliveryGate(areg)
                assert gate.registry is areg.registry
                ids = [
                    (await areg.create_campaign(name="c", channels={"push"})).id for _ in range(20)
                ]
                await areg.resume_many(ids)
                assert all(gate.check(cid, "push").admitted for cid in ids)

                async def archive(cid):
                    await areg.archive(cid)
                    # Once the await returns, this process's gate denies: no refresh needed.
                    return gate.check(cid, "push").reason

                reasons = await asyncio.gather(*(archive(cid) for cid in ids))
                await gate.aclose()
                return reasons

        assert [Reason.ARCHIVED] * 20 == asyncio.run(main())


class TestShutdownAndCancel:
    """aclose() waits for calls in flight; a cancelled await does not undo its call."""

    def test_aclose_mid_archive_waits_for_it(self):
        async def main():
            areg = open_async_registry("memory://", drain_timeout=10)
            gate = DeliveryGate(areg)
            c = await areg.create_campaign(name="c", channels={"email"}, campaign_id="c-ß")
            await areg.resume(c.id)
            permit = gate.permit(c.id, "email").__enter__()
            archive = asyncio.create_task(areg.archive(c.id))
            await asyncio.sleep(0.05)  # the archive is draining: it waits for the permit
            closing = asyncio.create_task(areg.aclose())
            await asyncio.sleep(0.05)
            assert not closing.done()  # waits for the archive in flight
            permit.__exit__(None, None, None)
            result = await archive
            await closing
            with pytest.raises(StoreError, match="closed"):
                await areg.get(c.id)
            await gate.aclose()
            return result

        assert asyncio.run(main()).changed

    def test_a_cancelled_archive_still_completes(self):
        async def main():
            async with open_async_registry("memory://", drain_timeout=10) as areg:
                gate = DeliveryGate(areg)
                c = await areg.create_campaign(name="c", channels={"email"})
                await areg.resume(c.id)
                permit = gate.permit(c.id, "email").__enter__()
                archive = asyncio.create_task(areg.archive(c.id))
                await asyncio.sleep(0.05)
                archive.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await archive
                # Denied at once: the fence went up before the commit.
                assert not gate.check(c.id, "email").admitted
                permit.__exit__(None, None, None)
                await gate.aclose()
            return c.id, areg

        cid, areg = asyncio.run(main())
        # aclose() waited for the archive's thread: it committed.
        assert "archived" == areg.registry.store.get_campaign(cid).state.value
