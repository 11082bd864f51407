"""Ground's telecommands, routed by the path each vehicle was last heard on. Pure.

A command goes by the path its target last showed in its downlink (kept by
:class:`services.kernel.archive.GroundArchive`): direct on ``cmd.<target>``,
or via Queqiao-2 on ``xfer.relay`` as ``{"type": "relay_cmd", ...}``. While
the target has no path, ground holds the command, and sends what it holds in
the order held once a path exists. Absolute-time plan items and time-tagged
commands count as uploaded in an earlier pass and go at once.

:class:`GroundLinks` is ground's whole comms bookkeeping: the archive of
what it hears and the commands it routes by it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.kernel.archive import GroundArchive
from services.kernel.outbox import Outbox


def _uplink_id(command: dict[str, Any]) -> dict[str, Any]:
    """An uplinked command's id, for the events that follow it (none for the plan's)."""
    return {"command_id": command["command_id"]} if "command_id" in command else {}


#: Command fields that mark a time-tagged command (docs/mission.md: uploaded
#: in an earlier pass and run on board).
TIME_TAGS = ("execute_at_s", "execute_at_utc")


@dataclass
class GroundLinks:
    """What ground has heard (:class:`GroundArchive`), and the commands it has
    routed (count per route) and holds for a target with no path."""

    heard: GroundArchive = field(default_factory=GroundArchive)
    held: list[dict[str, Any]] = field(default_factory=list)
    routed: dict[str, int] = field(default_factory=dict)  # route -> commands

    # --- what ground hears, kept by its archive ----------------------------------
    def on_downlink(self, body: dict[str, Any]) -> None:
        self.heard.on_downlink(body)

    def on_event(self, vehicle: str, name: str, body: dict[str, Any], t_s: float) -> None:
        self.heard.on_event(vehicle, name, body, t_s)

    def deliver(self, t_s: float) -> int:
        return self.heard.deliver(t_s)

    # --- telecommands -----------------------------------------------------------
    def path_to(self, target: str) -> str:
        """``direct``, ``relay`` or ``none``. A vehicle never heard from rides
        stowed in a stack that has a link: its commands go direct."""
        known = self.heard.paths.get(target)
        if known is None:
            return "direct"
        return "relay" if known[0] == "relay" else ("none" if known[0] == "none" else "direct")

    def route(self, target: str, command: dict[str, Any], t_s: float, out: Outbox,
              stored: bool = False) -> str:
        """Send a command by the target's path, or hold it. ``stored``: an
        absolute-time plan item, uploaded in an earlier pass like a time-tagged
        command; those go at once whatever the path."""
        tagged = stored or any(k in command for k in TIME_TAGS)
        path = "direct" if tagged else self.path_to(target)
        if path == "none":
            self.held.append({"target": target, "command": command, "held_at_s": t_s})
            out.event("ground", "command_held", t_s, target=target, op=command.get("op"),
                      plan_id=command.get("plan_id"), **_uplink_id(command))
            return "held"
        self._send(target, command, path, t_s, out)
        return path

    def release(self, t_s: float, out: Outbox) -> None:
        """Send held commands whose target has a path again, in the order held."""
        if not self.held:
            return
        keep = []
        for h in self.held:
            path = self.path_to(h["target"])
            if path == "none":
                keep.append(h)
                continue
            self._send(h["target"], h["command"], path, t_s, out)
            out.event("ground", "command_released", t_s, target=h["target"],
                      op=h["command"].get("op"), plan_id=h["command"].get("plan_id"), path=path,
                      held_s=t_s - float(h["held_at_s"]), **_uplink_id(h["command"]))
        self.held = keep

    def _send(self, target: str, command: dict[str, Any], path: str, t_s: float,
              out: Outbox) -> None:
        self.routed[path] = self.routed.get(path, 0) + 1
        if path == "relay":
            out.send("xfer", "relay", t_s, {"type": "relay_cmd", "to": target,
                                            "command": command})
        else:
            out.send("cmd", target, t_s, command)

    # --- report ---------------------------------------------------------------
    def values(self) -> dict[str, float]:
        """Frames in flight, commands held and sent per route, then the archive's
        figures per vehicle."""
        out: dict[str, float] = {"frames_in_flight": float(len(self.heard.in_flight)),
                                 "commands_held": float(len(self.held))}
        for route, n in sorted(self.routed.items()):
            out[f"commands_{route}"] = float(n)
        out.update(self.heard.values())
        return out

    def info(self) -> dict[str, str]:
        return self.heard.info()

    def snapshot(self) -> dict[str, Any]:
        return {**self.heard.snapshot(), "held": self.held, "routed": self.routed}

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any]) -> GroundLinks:
        return cls(GroundArchive.from_snapshot(snap), list(snap["held"]), dict(snap["routed"]))
