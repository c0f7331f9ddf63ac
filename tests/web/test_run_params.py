"""A run's parameters reach every viewer (docs/protocol.md, snapshot and delta `run`), so a
view link's toolbar shows what is running, not its own defaults."""

from __future__ import annotations

import pytest
from webhelpers import ROOT, Viewer, arun

from ptviz.debugger import records

pytestmark = pytest.mark.django_db(transaction=True)

WP = ROOT / "scenarios" / "wp_range_seed.toml"


def test_every_viewer_learns_the_running_parameters(mode):
    live = records.check_scenario(WP.read_text(), WP.name)
    session, control, view = records.create(live, "test")
    params = {"mode": "random", "seed": 7, "speed": 2.0, "max_steps": 5_000_000}

    async def body():
        a = await Viewer.open(session.id, control.token)
        b = await Viewer.open(session.id, view.token)
        await a.start()
        _, snap = await b.start()
        assert snap["run"] is None
        await a.ok("run", **params)
        running = await b.expect(lambda m: m["type"] == "delta" and m["running"], 15)
        assert running["run"] == params
        late = await Viewer.open(session.id, view.token)  # joins while it runs
        _, snap = await late.start()
        assert snap["running"] and snap["run"] == params
        await a.ok("pause")
        paused = await b.expect(lambda m: m["type"] == "delta" and not m["running"], 15)
        assert "run" not in paused
        for v in (a, b, late):
            await v.close()

    arun(body())
