"""Every service's state can be snapshotted mid-mission and restored exactly."""

from __future__ import annotations

import orjson

from services.local.inproc import LocalTwin
from tests.integration.twin_helpers import plan


async def test_snapshots_round_trip_through_json(nats_url: str, mission_id: str) -> None:
    async with LocalTwin(nats_url, mission_id, plan(hours=6.0), start_paused=True) as twin:
        twin.ground.clock.request_steps(5)
        await twin.ground.clock.wait_until(lambda: twin.ground.step >= 5)
        for rt in twin.all.values():
            snap = orjson.loads(orjson.dumps(rt.snapshot(), option=orjson.OPT_SERIALIZE_NUMPY))
            assert snap["step"] == 5
            before = rt.core.summary()
            if rt.name != "ground":  # a fresh core of the same kind becomes the same vehicle
                fresh = type(rt.core)(rt.config.seed)
                fresh.restore(snap["core"])
                assert fresh.summary() == before
                assert fresh.snapshot() == snap["core"]
            rt.core.restore(snap["core"])
            assert rt.core.summary() == before
            rt.restore(snap)
            assert (rt.step, rt.t_s) == (5, snap["t_s"])
