"""The twin's one CCSDS dictionary: packets, parameters, events and commands.

Written once, here, as Python data. Everything else follows from it:
:mod:`services.gateway.packets` encodes telemetry and decodes telecommands by
it, :mod:`services.gateway.xtce` renders the XTCE 1.2 mission database Yamcs
loads (``deploy/yamcs/mdb/change6.xml``), :mod:`services.gateway.cosmos` the
OpenC3 COSMOS command and telemetry definitions (``deploy/cosmos/``), and
``scripts/gen_mdb.py --check`` fails when those files drift from it.
tests/unit/test_gateway_dictionary.py reads the vehicles' code and the event
catalogue, so the dictionary cannot drift from them either.

The layout is the contract of issue 23 (docs/ccsds.md). Where the contract is
silent, the choice is marked "Chosen:" beside it.

Codes are pinned, not derived from list positions at import: an archive of
packets stays readable when a phase, event or mode is added (new names take
new codes at the end; a name that leaves the code keeps its code unused).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from services.kernel.events import KNOWN_EVENTS

# --- Service and packet identifiers -----------------------------------------
#: Service -> APID (11 bits). Ground's own packets (acks, links, its events) on 100.
APIDS: Mapping[str, int] = MappingProxyType({
    "ground": 100, "orbiter": 101, "lander": 102, "ascender": 103, "reentry": 104, "relay": 105,
})
SERVICES: tuple[str, ...] = tuple(APIDS)
VEHICLES: tuple[str, ...] = SERVICES[1:]
SERVICE_OF_APID: Mapping[int, str] = MappingProxyType({a: s for s, a in APIDS.items()})

#: TM packet ids, the octet after the CUC time.
HK, EVENT, CMD_ACK, LINKS = 1, 2, 3, 4
PACKET_KINDS: Mapping[int, str] = MappingProxyType(
    {HK: "HK", EVENT: "EVENT", CMD_ACK: "CMD_ACK", LINKS: "LINKS"})

PRIMARY_HEADER_OCTETS = 6
#: CUC 4+2 octets (P-field implicit, not sent), then the packet id.
TM_SECONDARY_HEADER_OCTETS = 7
#: Fixed string fields (an event's text, an ack's reason): UTF-8, NUL-padded.
#: Chosen: at most TEXT_OCTETS - 1 octets of text, so at least one NUL always
#: ends it (XTCE's TerminationChar, which Yamcs and space-packet-parser need).
TEXT_OCTETS = 96
#: The code an enumeration gives a name it does not know (the contract's 255).
UNKNOWN = 255
UNKNOWN_LABEL = "unknown"
#: CUC fine time: 2 octets of 1/65536 s.
CUC_FINE_PER_S = 65_536

Kind = Literal["uint", "float", "enum", "string"]
ArgKind = Literal["uint", "float", "enum", "utc"]
Enum = tuple[tuple[int, str], ...]


# --- What a dictionary entry is -----------------------------------------------
@dataclass(frozen=True)
class Limits:
    """Static alarm bounds in engineering units; ``None``: no bound that side.
    A value below a ``*_low`` or above a ``*_high`` is out of that level's limits."""

    warning_low: float | None = None
    warning_high: float | None = None
    critical_low: float | None = None
    critical_high: float | None = None
    why: str = ""


@dataclass(frozen=True)
class ContextAlarm:
    """``label`` of an enumerated parameter is alarm ``level`` while the parameter
    ``context`` reads ``context_label`` (an XTCE ContextAlarm)."""

    context: str
    context_label: str
    label: str
    level: Literal["warning", "critical"]


@dataclass(frozen=True)
class Field:
    """One parameter in a packet.

    ``name`` is unique in the whole dictionary (the XTCE parameter); ``key`` is
    what the twin calls it (a frame's key, a ``values`` key) and, upper-cased,
    the COSMOS item of its packet."""

    name: str
    key: str
    kind: Kind
    bits: int
    unit: str = ""
    description: str = ""
    enum: Enum = ()
    limits: Limits | None = None
    context_alarms: tuple[ContextAlarm, ...] = ()
    #: Polynomial c0 + c1 x + ... from the raw integer to engineering units.
    calibration: tuple[float, ...] = ()


@dataclass(frozen=True)
class Packet:
    """A TM packet of one service: ``(apid, packet_id)`` identifies it."""

    service: str
    kind: str  # HK, EVENT, CMD_ACK, LINKS
    fields: tuple[Field, ...]
    description: str

    @property
    def apid(self) -> int:
        return APIDS[self.service]

    @property
    def packet_id(self) -> int:
        return next(i for i, k in PACKET_KINDS.items() if k == self.kind)

    @property
    def name(self) -> str:
        """The XTCE container, e.g. ``ORBITER_HK`` (COSMOS: target ORBITER, packet HK)."""
        return f"{self.service.upper()}_{self.kind}"


@dataclass(frozen=True)
class Argument:
    """A telecommand argument, fixed size. ``utc``: a UTC instant sent as uint32
    Unix seconds and given to the twin as ISO text. ``minimum``/``maximum``
    are the valid range Yamcs enforces (XTCE ValidRange); an enum's range is
    its labels."""

    name: str
    kind: ArgKind
    bits: int
    unit: str
    description: str
    minimum: float | None = None
    maximum: float | None = None
    enum: Enum = ()
    #: Where the value goes in the twin command ({"delta_v_m_s": {"x": ...}});
    #: empty: the argument's own name.
    path: tuple[str, ...] = ()

    @property
    def twin_path(self) -> tuple[str, ...]:
        return self.path or (self.name,)


@dataclass(frozen=True)
class Command:
    """A telecommand to one vehicle: ``(apid, opcode)`` identifies it, ``op``
    and the arguments make the twin command ``{"op": op, **args}``."""

    target: str
    name: str
    opcode: int
    op: str
    description: str
    arguments: tuple[Argument, ...] = ()

    @property
    def apid(self) -> int:
        return APIDS[self.target]

    @property
    def full_name(self) -> str:
        """The XTCE MetaCommand, e.g. ``ORBITER_SET_MODE`` (COSMOS: ORBITER SET_MODE)."""
        return f"{self.target.upper()}_{self.name}"


# --- Enumerations -----------------------------------------------------------------
#: Chosen: 255 "unknown" for a body or path the twin does not name here.
CENTRAL_BODIES: Enum = ((0, "none"), (1, "earth"), (2, "moon"), (UNKNOWN, UNKNOWN_LABEL))
#: The path a frame came down (services/dynamics/links.py). Chosen: 3 for the
#: recovered capsule's recorder read out on site (recorder.Downlink.dump).
PATHS: Enum = ((0, "none"), (1, "direct"), (2, "relay"), (3, "recovery"),
               (UNKNOWN, UNKNOWN_LABEL))
#: Chosen: the contract's playback octet (0/1) as an enumeration, same octet.
PLAYBACK: Enum = ((0, "live"), (1, "playback"))
ACK_STAGES: Enum = ((1, "accepted"), (2, "uplinked"), (3, "executed"), (4, "failed"))

#: Every phase name a vehicle core can be in, with one code across vehicles
#: (lunar_orbit reads the same on the orbiter, lander and ascender). Modes set
#: by ``set_mode`` become the phase too, so they are phases (30..).
PHASE_CODES: Mapping[str, int] = MappingProxyType({
    "prelaunch": 0, "launch": 1, "earth_moon_transfer": 2, "lunar_orbit_insertion": 3,
    "lunar_orbit": 4, "rendezvous": 5, "docked": 6, "trans_earth_injection": 7,
    "moon_earth_transfer": 8, "extended_mission": 9, "stowed": 10, "powered_descent": 11,
    "surface": 12, "dormant": 13, "on_pad": 14, "ascent": 15, "phasing": 16, "free": 17,
    "deorbit": 18, "impacted": 19, "coast": 20, "entry": 21, "landed": 22, "recovered": 23,
    "relay_ops": 24,
    "safe": 30, "standby": 31, "cruise": 32, "checkout": 33, "relay_ready": 34,
})
#: The modes SET_MODE offers (services/kernel/vehicle.py ``set_mode`` takes any
#: name; these are the ones the flight plans and operators use). Chosen.
MODES: tuple[str, ...] = ("safe", "standby", "cruise", "checkout", "relay_ready")
#: Each vehicle core's own phases (services/<vehicle>/vehicle.py; "prelaunch"
#: is VehicleCore's before a core sets its own).
VEHICLE_PHASES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "orbiter": ("prelaunch", "launch", "earth_moon_transfer", "lunar_orbit_insertion",
                "lunar_orbit", "rendezvous", "docked", "trans_earth_injection",
                "moon_earth_transfer", "extended_mission"),
    "lander": ("prelaunch", "stowed", "lunar_orbit", "powered_descent", "surface", "dormant"),
    "ascender": ("prelaunch", "stowed", "on_pad", "ascent", "lunar_orbit", "phasing",
                 "rendezvous", "docked", "free", "deorbit", "impacted"),
    "reentry": ("prelaunch", "stowed", "coast", "entry", "landed", "recovered"),
    "relay": ("prelaunch", "relay_ops"),
})
#: Phases in which losing the link is an alarm: the far-side powered descent
#: and ascent, watched only through Queqiao-2 (the same set as the Prometheus
#: rule TwinLinkLostInCriticalPhase, deploy/prometheus/rules/).
CRITICAL_PHASES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "lander": ("powered_descent",), "ascender": ("ascent",),
})


def phase_enum(vehicle: str) -> Enum:
    """The phase enumeration of one vehicle: its phases, the modes, unknown."""
    names = (*VEHICLE_PHASES[vehicle], *MODES)
    return (*sorted((PHASE_CODES[n], n) for n in names), (UNKNOWN, UNKNOWN_LABEL))


def mode_enum() -> Enum:
    """SET_MODE's argument: the modes, coded as the phase they become."""
    return tuple((PHASE_CODES[m], m) for m in MODES)


#: Event name -> code (uint16; 0 unknown). Pinned in the catalogue's listing
#: order of issue 23 (services/kernel/events.py: KEY_EVENTS, then OTHER_EVENTS);
#: an event added to the catalogue later takes the next code (:data:`EVENT_CODES`).
_PINNED_EVENTS: tuple[str, ...] = (
    "probe_separation", "lunar_orbit_insertion", "icubeq_release", "la_or_separation",
    "powered_descent_start", "lunar_touchdown", "sampling_complete", "ascent_liftoff",
    "ascent_orbit_insertion", "docking", "sample_transfer", "ascender_impact", "tei_burn_1",
    "tei_burn_2", "returner_separation", "entry_interface", "skip_out", "parachute_deploy",
    "earth_landing",
    "ascender_deorbit_burn", "ascender_docked", "ascender_free", "avoidance_burn", "burn_end",
    "burn_failed", "burn_start", "closing_burn", "command_executed", "command_held",
    "command_rejected", "command_released", "command_uplinked", "commanded_burn",
    "deorbit_planned", "descent_orbit_lowering", "descent_phase", "descent_planned",
    "drill_complete", "drill_increment", "drill_start", "fault_cleared", "fault_injected",
    "flag_deployed", "frame_switch", "handover_accepted", "handover_acknowledged",
    "hover_start", "lander_dormant", "link_acquired", "link_lost", "message_rejected",
    "mission_end", "mode_changed", "orbit_adjustment", "orbit_adjustment_planned",
    "parachute_attitude", "parameters_applied", "payload_off", "payload_on", "phasing_burn",
    "phasing_planned", "plan_item_issued", "propellant_reserve_used", "recovery",
    "relay_outage_end", "relay_outage_start", "rendezvous_aim_point", "sample_custody",
    "sample_sealed", "scoop_complete", "scoop_increment", "scoop_start", "second_entry",
    "surface_setup", "tei_planned", "trajectory_correction", "undocking",
)
EVENT_CODES: Mapping[str, int] = MappingProxyType({
    name: code for code, name in enumerate(
        (*_PINNED_EVENTS, *sorted(KNOWN_EVENTS - set(_PINNED_EVENTS))), start=1)
})


def event_enum() -> Enum:
    return ((0, UNKNOWN_LABEL), *sorted((c, n) for n, c in EVENT_CODES.items()))


# --- Housekeeping -----------------------------------------------------------------
#: The link keys every vehicle's downlink reports (services/kernel/recorder.py
#: downlink_values; the runtime merges them into every core's summary values).
LINK_KEYS: tuple[str, ...] = (
    "backlog_frames", "frames_dropped", "frames_played_back", "frames_recorded",
    "frames_sent_live", "link_acquisitions", "link_fraction", "link_light_time_s", "link_up",
    "max_backlog_frames",
)
#: Each vehicle's own summary ``values`` keys (its summary() in
#: services/<vehicle>/vehicle.py, the lander's surface.py values()). HK carries
#: the link keys, then these; a key a frame lacks is sent as NaN. A key added
#: later goes at the end, so the fields before it keep their place.
OWN_VALUES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "orbiter": ("battery_soc_ratio", "icubeq_altitude_m", "icubeq_images", "power_w",
                "propellant_reserve_kg", "sunlit_ratio", "temperature_c", "thrust_n"),
    "lander": ("battery_soc_ratio", "drill_depth_m", "drill_sample_g", "load_w",
               "nils_temperature_c", "power_w", "propellant_reserve_kg", "scoop_sample_g",
               "sun_elevation_deg", "temperature_c", "thrust_n"),
    "ascender": ("propellant_reserve_kg", "thrust_n"),
    "reentry": ("bank_deg", "flight_path_angle_deg", "heat_flux_w_m2", "range_to_target_m",
                "sensed_accel_m_s2"),
    "relay": ("battery_soc_ratio", "commands_forwarded", "frames_forwarded",
              "frames_relay_played_back", "ground_link_up", "power_w",
              "relay_max_store_frames", "relay_store_frames", "unmet_load_wh"),
})

#: A frame's own float64 fields, before the values (services/kernel/radio.py frame_body).
FRAME_FLOATS: Mapping[str, tuple[str, str]] = MappingProxyType({
    "alt_m": ("m", "altitude above the central body's mean radius"),
    "speed_m_s": ("m/s", "speed relative to the central body (0 on the surface)"),
    "mass_kg": ("kg", "vehicle mass, propellant included"),
    "propellant_kg": ("kg", "propellant on board"),
    "sample_mass_g": ("g", "lunar sample carried"),
})
#: Every summary ``values`` key: (unit, what it is).
VALUE_SPECS: Mapping[str, tuple[str, str]] = MappingProxyType({
    "backlog_frames": ("frames", "frames waiting in the on-board recorder"),
    "frames_dropped": ("frames", "frames lost to a full recorder"),
    "frames_played_back": ("frames", "recorded frames sent after a gap"),
    "frames_recorded": ("frames", "frames put in the recorder"),
    "frames_sent_live": ("frames", "frames sent in the step they were recorded"),
    "link_acquisitions": ("count", "times a downlink path was acquired"),
    "link_fraction": ("ratio", "share of active mission time with a downlink path"),
    "link_light_time_s": ("s", "one-way light time of the current path"),
    "link_up": ("flag", "1 while the vehicle has a downlink path"),
    "max_backlog_frames": ("frames", "largest recorder backlog so far"),
    "battery_soc_ratio": ("ratio", "battery state of charge"),
    "icubeq_altitude_m": ("m", "ICUBE-Q's altitude above the Moon's mean radius"),
    "icubeq_images": ("images", "images ICUBE-Q has taken"),
    "power_w": ("W", "solar array output"),
    "propellant_reserve_kg": ("kg", "propellant kept back from ordinary draws"),
    "sunlit_ratio": ("ratio", "share of the last step in sunlight"),
    "temperature_c": ("degC", "bus temperature"),
    "thrust_n": ("N", "main engine thrust"),
    "drill_depth_m": ("m", "depth drilled"),
    "drill_sample_g": ("g", "sample taken by the drill"),
    "load_w": ("W", "electrical load"),
    "nils_temperature_c": ("degC", "NILS instrument temperature"),
    "scoop_sample_g": ("g", "sample taken by the scoop"),
    "sun_elevation_deg": ("deg", "Sun elevation at the landing site"),
    "bank_deg": ("deg", "bank angle of the lifting entry"),
    "flight_path_angle_deg": ("deg", "flight path angle, Earth-relative"),
    "heat_flux_w_m2": ("W/m2", "stagnation-point convective heat flux"),
    "range_to_target_m": ("m", "ground range to the Siziwang landing target"),
    "sensed_accel_m_s2": ("m/s2", "sensed (aerodynamic) deceleration"),
    "commands_forwarded": ("commands", "telecommands Queqiao-2 has forwarded"),
    "frames_forwarded": ("frames", "frames Queqiao-2 has forwarded to ground"),
    "frames_relay_played_back": ("frames", "frames Queqiao-2 stored and sent later"),
    "ground_link_up": ("flag", "1 while Queqiao-2 sees a ground station"),
    "relay_max_store_frames": ("frames", "largest Queqiao-2 store so far"),
    "relay_store_frames": ("frames", "frames stored on Queqiao-2 for ground"),
    "unmet_load_wh": ("Wh", "energy the load wanted and the battery could not give"),
})

_G_M_S2 = 9.80665  # standard gravity (CGPM 1901)
#: (vehicle, key) -> limits. Chosen thresholds, each with its reason; none is
#: crossed in the nominal mission (minima seen: orbiter propellant 670 kg, lander
#: 86 kg, ascender 65 kg; battery 0.50; entry peak 77 m/s2).
LIMITS: Mapping[tuple[str, str], Limits] = MappingProxyType({
    ("orbiter", "propellant_kg"): Limits(
        warning_low=140.0, critical_low=70.0,
        why="critical below the 70 kg reserve (services/orbiter/design.py "
            "PROPELLANT_RESERVE_KG), warning below twice it"),
    ("lander", "propellant_kg"): Limits(
        warning_low=50.0, critical_low=25.0,
        why="a hover of a few seconds is left below 50 kg; 25 kg is the floor"),
    ("ascender", "propellant_kg"): Limits(
        warning_low=40.0, critical_low=20.0,
        why="the deorbit burn needs a few tens of kg after docking"),
    **{(v, "battery_soc_ratio"): Limits(
        warning_low=0.3, critical_low=0.15,
        why="state of charge below 30 % leaves little margin for an eclipse or the night")
       for v in ("orbiter", "lander", "relay")},
    ("reentry", "sensed_accel_m_s2"): Limits(
        warning_high=10.0 * _G_M_S2, critical_high=12.0 * _G_M_S2,
        why="12 g, the twin's entry load limit (Prometheus TwinEntryDecelerationAboveLimit)"),
})


def hk_values(vehicle: str) -> tuple[str, ...]:
    """The ``values`` keys of a vehicle's HK packet, in packet order."""
    return (*LINK_KEYS, *OWN_VALUES[vehicle])


def _float(vehicle: str, key: str, unit: str, what: str) -> Field:
    return Field(f"{vehicle}_{key}", key, "float", 64, unit, what,
                 limits=LIMITS.get((vehicle, key)))


def _hk_fields(vehicle: str) -> tuple[Field, ...]:
    head = (
        Field(f"{vehicle}_frame_seq", "frame_seq", "uint", 32, "frames",
              "the frame's number in the vehicle's recorder (1, 2, 3...)"),
        Field(f"{vehicle}_phase", "phase", "enum", 8, description="the vehicle's phase",
              enum=phase_enum(vehicle)),
        Field(f"{vehicle}_central_body", "central_body", "enum", 8,
              description="body the state is about", enum=CENTRAL_BODIES),
        Field(f"{vehicle}_path", "path", "enum", 8, description="path the frame came down",
              enum=PATHS),
        Field(f"{vehicle}_playback", "playback", "enum", 8,
              description="live, or recorded and sent after a gap", enum=PLAYBACK),
    )
    own = tuple(_float(vehicle, k, *FRAME_FLOATS[k]) for k in FRAME_FLOATS)
    values = tuple(_float(vehicle, k, *VALUE_SPECS[k]) for k in hk_values(vehicle))
    return head + own + values


def _event_fields(service: str) -> tuple[Field, ...]:
    return (
        Field(f"{service}_event", "event", "enum", 16, description="mission event",
              enum=event_enum()),
        Field(f"{service}_event_text", "text", "string", 8 * TEXT_OCTETS,
              description="the event's scalar fields as JSON, cut to fit"),
    )


def _link_field(vehicle: str) -> Field:
    name = f"{vehicle}_link"
    alarms = tuple(ContextAlarm(f"{vehicle}_phase", phase, "none", "critical")
                   for phase in CRITICAL_PHASES.get(vehicle, ()))
    return Field(name, name, "enum", 8, description=f"the path ground last heard {vehicle} on",
                 enum=PATHS, context_alarms=alarms)


PACKETS: tuple[Packet, ...] = (
    *(Packet(v, "HK", _hk_fields(v), f"{v} housekeeping: one downlink frame ground archived")
      for v in VEHICLES),
    *(Packet(s, "EVENT", _event_fields(s), f"a mission event {s} published") for s in SERVICES),
    Packet("ground", "CMD_ACK", (
        Field("ack_command_id", "command_id", "uint", 32, "id",
              "the telecommand's command_id"),
        Field("ack_stage", "stage", "enum", 8, description="how far the telecommand got",
              enum=ACK_STAGES),
        Field("ack_reason", "reason", "string", 8 * TEXT_OCTETS,
              description="why it failed, or what happened"),
    ), "a telecommand's progress: accepted, uplinked, executed or failed"),
    Packet("ground", "LINKS", tuple(_link_field(v) for v in VEHICLES),
           "the path ground last heard each vehicle on"),
)
PACKET_BY_ID: Mapping[tuple[int, int], Packet] = MappingProxyType(
    {(p.apid, p.packet_id): p for p in PACKETS})


def packet(service: str, kind: str) -> Packet:
    """The packet ``kind`` (HK, EVENT, CMD_ACK, LINKS) of ``service``; KeyError if none."""
    return PACKET_BY_ID[(APIDS[service], next(i for i, k in PACKET_KINDS.items() if k == kind))]


# --- Headers --------------------------------------------------------------------------
#: CCSDS 133.0-B primary header, as parameters (XTCE, COSMOS).
PRIMARY_HEADER: tuple[Field, ...] = (
    Field("ccsds_version", "ccsds_version", "uint", 3, description="packet version number (0)"),
    Field("ccsds_type", "ccsds_type", "uint", 1, description="0 telemetry, 1 telecommand"),
    Field("ccsds_sec_hdr_flag", "ccsds_sec_hdr_flag", "uint", 1,
          description="1: a secondary header follows (telemetry)"),
    Field("ccsds_apid", "ccsds_apid", "uint", 11, description="application process id"),
    Field("ccsds_seq_flags", "ccsds_seq_flags", "uint", 2, description="3: unsegmented"),
    Field("ccsds_seq_count", "ccsds_seq_count", "uint", 14, "packets",
          description="per-APID count, wraps at 16384"),
    Field("ccsds_length", "ccsds_length", "uint", 16, "octets",
          description="octets after the primary header, minus 1"),
)
#: The TM secondary header: CUC time of what the packet reports (mission time,
#: as UTC since the Unix epoch), then the packet id.
TM_SECONDARY_HEADER: tuple[Field, ...] = (
    Field("cuc_coarse", "cuc_coarse", "uint", 32, "s", "whole seconds since 1970-01-01 UTC"),
    Field("cuc_fine", "cuc_fine", "uint", 16, "s", "fraction of a second, in 1/65536 s",
          calibration=(0.0, 1.0 / CUC_FINE_PER_S)),
    Field("packet_id", "packet_id", "uint", 8, description="1 HK, 2 EVENT, 3 CMD_ACK, 4 LINKS"),
)
#: A TC's user data starts with these, after the primary header (no secondary header).
TC_HEAD: tuple[Argument, ...] = (
    Argument("command_id", "uint", 32, "id", "chosen by the sender; acks name it",
             0, 0xFFFF_FFFF),
    Argument("opcode", "uint", 8, "", "which command of the target", 0, 0xFF),
)


# --- Telecommands ------------------------------------------------------------------------
_LAUNCH_UNIX_S = 1_714_728_449  # 2024-05-03T09:27:29Z (services/dynamics/constants.py)
_DAY_S = 86_400
#: Chosen: a delta-v of at most 20 m/s per axis in one operator burn (the
#: mission's trims and phasing burns are a few m/s; LOI and TEI are planned burns).
MAX_BURN_DV_M_S = 20.0


def _set_mode(target: str) -> Command:
    return Command(target, "SET_MODE", 1, "set_mode",
                   f"put {target} in a mode (refused in an autonomous phase)",
                   (Argument("mode", "enum", 8, "", "the mode", enum=mode_enum()),))


def _dv(axis: str) -> Argument:
    return Argument(f"dv_{axis}_m_s", "float", 64, "m/s", f"delta-v, {axis} component",
                    -MAX_BURN_DV_M_S, MAX_BURN_DV_M_S, path=("delta_v_m_s", axis))


COMMANDS: tuple[Command, ...] = (
    *(_set_mode(v) for v in VEHICLES),
    # The orbiter's orbit_adjust takes a stage and the PDI it aims at (not a
    # delta-v: it plans its own burns); the operator's delta-v is BURN.
    Command("orbiter", "ORBIT_ADJUST", 2, "orbit_adjust",
            "plan orbit adjustment stage 1..4 over the landing site at PDI (lunar orbit)", (
                Argument("stage", "uint", 8, "", "adjustment stage", 1, 4),
                Argument("pdi_utc", "utc", 32, "s",
                         "powered descent initiation, UTC as seconds since 1970",
                         _LAUNCH_UNIX_S, _LAUNCH_UNIX_S + 60 * _DAY_S),
            )),
    Command("orbiter", "BURN", 3, "burn", "an impulsive burn now, in the frame given", (
        Argument("frame", "enum", 8, "", "frame of the delta-v",
                 enum=((0, "RTN"), (1, "MCI"), (2, "ECI"))),
        _dv("x"), _dv("y"), _dv("z"),
    )),
    Command("lander", "OPERATION", 2, "operation",
            "a surface operation (after SURFACE_SETUP): drill, scoop, then seal the sample", (
                Argument("operation", "enum", 8, "", "the operation",
                         enum=((1, "drill"), (2, "scoop"), (3, "seal_sample"))),
            )),
    Command("lander", "SURFACE_SETUP", 3, "surface_setup", "set up for surface operations"),
)
COMMAND_BY_ID: Mapping[tuple[int, int], Command] = MappingProxyType(
    {(c.apid, c.opcode): c for c in COMMANDS})
