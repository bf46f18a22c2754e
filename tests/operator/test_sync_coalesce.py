"""How the node-config loop gathers changes into rounds of writes (handlers.coalesce):
each round rewrites every changed node's whole config."""

from __future__ import annotations

import asyncio

from orb8_operator.handlers import OperatorState, coalesce


def test_a_burst_of_new_sessions_is_written_in_one_round_once_it_pauses() -> None:
    async def scenario() -> None:
        st = OperatorState()
        st.dirty.set()
        burst_over = asyncio.Event()

        async def sessions_arrive() -> None:
            for _ in range(60):  # back to back, well inside the quiet window
                st.arrivals += 1
                st.dirty.set()
                await asyncio.sleep(0.05)
            burst_over.set()

        burst = asyncio.create_task(sessions_arrive())
        # max_s alone would end the wait while the burst still runs.
        await asyncio.wait_for(coalesce(st, quiet_s=1.0, max_s=0.2, burst_max_s=3600), 120)
        assert burst_over.is_set()
        await burst

    asyncio.run(scenario())


def test_other_changes_are_written_at_least_every_max_s() -> None:
    async def scenario() -> None:
        st = OperatorState()
        st.dirty.set()
        stop = asyncio.Event()

        async def pods_churn() -> None:  # no new session: the usual bound holds
            while not stop.is_set():
                st.dirty.set()
                await asyncio.sleep(0.05)

        churn = asyncio.create_task(pods_churn())
        try:
            await asyncio.wait_for(coalesce(st, quiet_s=0.5, max_s=0.2, burst_max_s=3600), 120)
            assert not churn.done()  # returned while the changes went on
        finally:
            stop.set()
            await churn

    asyncio.run(scenario())


def test_a_burst_is_bounded() -> None:
    async def scenario() -> None:
        st = OperatorState()
        st.dirty.set()
        stop = asyncio.Event()

        async def sessions_arrive() -> None:
            while not stop.is_set():
                st.arrivals += 1
                st.dirty.set()
                await asyncio.sleep(0.05)

        burst = asyncio.create_task(sessions_arrive())
        try:
            await asyncio.wait_for(coalesce(st, quiet_s=0.5, max_s=0.2, burst_max_s=1.0), 120)
            assert not burst.done()  # written although sessions still arrive
        finally:
            stop.set()
            await burst

    asyncio.run(scenario())


def test_a_pause_ends_the_wait() -> None:
    async def scenario() -> None:
        st = OperatorState()
        st.dirty.set()
        await asyncio.wait_for(coalesce(st, quiet_s=0.1, max_s=3600, burst_max_s=3600), 120)
        assert not st.dirty.is_set()

    asyncio.run(scenario())
