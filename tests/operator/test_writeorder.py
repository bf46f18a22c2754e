"""Node-config write rounds go before session-status writes (orb8_operator.writeorder)."""

from __future__ import annotations

import asyncio

from orb8_operator.writeorder import ConfigsFirst


async def _settle() -> None:
    """Let every ready task run until it blocks (no clock involved)."""
    for _ in range(10):
        await asyncio.sleep(0)


def test_status_writes_hold_while_a_round_of_configs_is_written() -> None:
    async def scenario() -> list[str]:
        order = ConfigsFirst(status_writes=2, hold_max_s=3600)
        done: list[str] = []

        async def status(name: str) -> None:
            async with order.status():
                done.append(name)

        async with order.configs():
            assert order.writing_configs
            writes = [asyncio.create_task(status(f"s{i}")) for i in range(3)]
            await _settle()
            assert done == []  # queued behind the round
        assert not order.writing_configs
        await asyncio.wait_for(asyncio.gather(*writes), timeout=60)
        return done

    assert sorted(asyncio.run(scenario())) == ["s0", "s1", "s2"]


def test_a_status_write_under_way_is_not_held_by_a_round_that_starts_later() -> None:
    async def scenario() -> None:
        order = ConfigsFirst(status_writes=1, hold_max_s=3600)
        sending = asyncio.Event()
        release = asyncio.Event()
        finished = asyncio.Event()

        async def status() -> None:
            async with order.status():
                sending.set()
                await release.wait()  # the request is out
            finished.set()

        write = asyncio.create_task(status())
        await asyncio.wait_for(sending.wait(), timeout=60)
        async with order.configs():
            release.set()
            await asyncio.wait_for(finished.wait(), timeout=60)  # finishes mid-round
        await write

    asyncio.run(scenario())


def test_status_writes_take_a_few_slots_at_a_time() -> None:
    async def scenario() -> None:
        order = ConfigsFirst(status_writes=2, hold_max_s=3600)
        inside = 0
        most = 0
        release = asyncio.Event()

        async def status() -> None:
            nonlocal inside, most
            async with order.status():
                inside += 1
                most = max(most, inside)
                await release.wait()
                inside -= 1

        writes = [asyncio.create_task(status()) for _ in range(5)]
        await _settle()
        assert inside == 2
        release.set()
        await asyncio.wait_for(asyncio.gather(*writes), timeout=60)
        assert most == 2

    asyncio.run(scenario())


def test_a_round_that_never_ends_holds_status_writes_only_so_long() -> None:
    async def scenario() -> None:
        order = ConfigsFirst(status_writes=1, hold_max_s=0.01)
        wrote = asyncio.Event()

        async def status() -> None:
            async with order.status():
                wrote.set()

        async with order.configs():
            await asyncio.wait_for(status(), timeout=60)
            assert wrote.is_set() and order.writing_configs

    asyncio.run(scenario())
