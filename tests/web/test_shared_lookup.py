"""The lookups the viewers of one server share (ptviz/debugger/shared_lookup.py)."""

import asyncio

import pytest

from ptviz.debugger.shared_lookup import SharedLookup


class Counted:
    """A lookup that counts its calls and answers after `delay` seconds."""

    def __init__(self, answer, delay=0.01):
        self.calls = 0
        self.answer = answer
        self.delay = delay

    async def __call__(self):
        self.calls += 1
        await asyncio.sleep(self.delay)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_viewers_asking_at_once_share_one_lookup():
    async def body():
        shared, fetch = SharedLookup(ttl=10), Counted("w1")
        answers = await asyncio.gather(*[shared.get("s", fetch) for _ in range(200)])
        assert answers == ["w1"] * 200
        assert fetch.calls == 1
        assert await shared.get("s", fetch) == "w1"  # and later ones within the ttl
        assert fetch.calls == 1

    asyncio.run(body())


def test_an_answer_older_than_the_ttl_is_looked_up_again():
    async def body():
        shared, fetch = SharedLookup(ttl=0.05), Counted("w1", delay=0)
        await shared.get("s", fetch)
        await asyncio.sleep(0.06)
        await shared.get("s", fetch)
        assert fetch.calls == 2

    asyncio.run(body())


def test_an_answer_it_must_not_keep_is_shared_in_flight_only():
    async def body():
        shared = SharedLookup(ttl=10, keep=lambda route: route[0] is not None)
        fetch = Counted((None, "ptviz-engine"))
        assert len(set(await asyncio.gather(*[shared.get("s", fetch) for _ in range(5)]))) == 1
        assert fetch.calls == 1
        await shared.get("s", fetch)  # no owner: asked again, someone is taking it over
        assert fetch.calls == 2

    asyncio.run(body())


def test_one_asker_cancelled_does_not_cancel_the_others():
    async def body():
        shared, fetch = SharedLookup(ttl=10), Counted("w1", delay=0.05)
        first = asyncio.ensure_future(shared.get("s", fetch))
        second = asyncio.ensure_future(shared.get("s", fetch))
        await asyncio.sleep(0.01)
        first.cancel()
        assert await second == "w1"
        assert fetch.calls == 1

    asyncio.run(body())


def test_a_failed_lookup_reaches_every_asker_and_is_not_kept():
    async def body():
        shared, fetch = SharedLookup(ttl=10), Counted(ConnectionError("database away"))
        results = await asyncio.gather(
            *[shared.get("s", fetch) for _ in range(3)], return_exceptions=True
        )
        assert all(isinstance(r, ConnectionError) for r in results)
        with pytest.raises(ConnectionError):
            await shared.get("s", fetch)
        assert fetch.calls == 2

    asyncio.run(body())


def test_a_lookup_left_in_flight_by_a_closed_event_loop_is_not_awaited():
    shared = SharedLookup(ttl=10)

    async def leave_in_flight():
        asyncio.ensure_future(shared.get("s", Counted("old", delay=10)))
        await asyncio.sleep(0)

    asyncio.run(leave_in_flight())  # (asyncio.run cancels it: nothing kept)

    async def body():
        return await shared.get("s", Counted("new", delay=0))

    assert asyncio.run(body()) == "new"
