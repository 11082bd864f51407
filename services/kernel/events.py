"""Names of the mission events, by the package that publishes them.

docs/mission.md has the owner and values of each. Ground and the CLI check
``twin clock until <event>`` against :data:`KNOWN_EVENTS`; neither may import a
vehicle package (nor may the kernel), so the names are written here, per
publisher, and tests/unit/test_events_catalogue.py reads every
``out.event(...)`` in services/ and fails unless each package publishes
exactly the names listed for it.
"""

from __future__ import annotations

#: Key events of the report, in mission order.
KEY_EVENTS: tuple[str, ...] = (
    "probe_separation", "lunar_orbit_insertion", "icubeq_release", "la_or_separation",
    "powered_descent_start", "lunar_touchdown", "sampling_complete", "ascent_liftoff",
    "ascent_orbit_insertion", "docking", "sample_transfer", "ascender_impact", "tei_burn_1",
    "tei_burn_2", "returner_separation", "entry_interface", "skip_out", "parachute_deploy",
    "earth_landing",
)

#: Published by every vehicle through the shared kernel: commands, faults,
#: transfers, the radio; and ground's held telecommands.
_KERNEL = frozenset({
    "command_rejected", "mode_changed", "fault_injected", "fault_cleared", "message_rejected",
    "link_acquired", "link_lost", "command_held", "command_released", "parameters_applied",
    # an operator's uplinked telecommand, run on board (services/gateway/)
    "command_executed",
})
_ORBITER = frozenset({
    "probe_separation", "trajectory_correction", "lunar_orbit_insertion", "icubeq_release",
    "orbit_adjustment_planned", "orbit_adjustment", "la_or_separation", "closing_burn",
    "docking", "handover_acknowledged", "sample_transfer", "sample_custody", "undocking",
    "tei_planned", "tei_burn_1", "tei_burn_2", "returner_separation", "avoidance_burn",
    "frame_switch", "burn_start", "burn_end", "burn_failed", "propellant_reserve_used",
    "commanded_burn", "command_rejected",
})
_LANDER = frozenset({
    "handover_accepted", "handover_acknowledged", "descent_planned", "burn_start", "burn_end",
    "descent_orbit_lowering", "powered_descent_start", "descent_phase", "hover_start",
    "lunar_touchdown", "surface_setup", "payload_on", "payload_off", "drill_start",
    "drill_increment", "drill_complete", "scoop_start", "scoop_increment", "scoop_complete",
    "flag_deployed", "sample_custody", "sample_sealed", "sampling_complete", "lander_dormant",
})
_ASCENDER = frozenset({
    "sample_custody", "handover_accepted", "handover_acknowledged", "ascent_liftoff",
    "ascent_orbit_insertion", "phasing_planned", "burn_start", "burn_end", "phasing_burn",
    "rendezvous_aim_point", "ascender_docked", "ascender_free", "deorbit_planned",
    "ascender_deorbit_burn", "ascender_impact",
})
_REENTRY = frozenset({
    "handover_accepted", "sample_custody", "entry_interface", "skip_out", "second_entry",
    "parachute_attitude", "parachute_deploy", "earth_landing", "recovery",
})
_GROUND = frozenset({"plan_item_issued", "mission_end", "command_uplinked"})
#: Queqiao-2's own: a dispersed outage (relay.outage.*) begins and ends.
_RELAY = frozenset({"relay_outage_start", "relay_outage_end"})

#: Package (services/<package>/) -> the events its code publishes.
PUBLISHED: dict[str, frozenset[str]] = {
    "kernel": _KERNEL, "orbiter": _ORBITER, "lander": _LANDER, "ascender": _ASCENDER,
    "reentry": _REENTRY, "ground": _GROUND, "relay": _RELAY,
}

#: Every event name a service may publish.
KNOWN_EVENTS: frozenset[str] = frozenset().union(*PUBLISHED.values())

#: The events that are not key events, alphabetical (listings follow the key ones).
OTHER_EVENTS: tuple[str, ...] = tuple(sorted(KNOWN_EVENTS - set(KEY_EVENTS)))
