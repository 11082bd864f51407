"""Names of the mission events (docs/mission.md has the owner and values of each)."""

from __future__ import annotations

#: Key events of the report, in mission order.
KEY_EVENTS: tuple[str, ...] = (
    "probe_separation", "lunar_orbit_insertion", "icubeq_release", "la_or_separation",
    "powered_descent_start", "lunar_touchdown", "sampling_complete", "ascent_liftoff",
    "ascent_orbit_insertion", "docking", "sample_transfer", "ascender_impact", "tei_burn_1",
    "tei_burn_2", "returner_separation", "entry_interface", "skip_out", "parachute_deploy",
    "earth_landing",
)

#: Every other event name a service may publish.
OTHER_EVENTS: tuple[str, ...] = (
    "trajectory_correction", "orbit_adjustment", "handover_accepted", "handover_acknowledged",
    "descent_orbit_lowering", "hover_start", "surface_setup", "drill_complete", "scoop_complete",
    "flag_deployed", "sample_sealed", "payload_on", "payload_off", "phasing_burn",
    "rendezvous_aim_point", "closing_burn", "undocking", "ascender_deorbit_burn", "second_entry",
    "parachute_attitude", "recovery", "link_acquired", "link_lost", "burn_start", "burn_end",
    "sample_custody", "fault_injected", "fault_cleared", "plan_item_issued", "mission_end",
    "mode_changed", "command_held", "command_released",
)

KNOWN_EVENTS: frozenset[str] = frozenset(KEY_EVENTS + OTHER_EVENTS)
