"""Deterministic delivery: buffer what arrives, apply it at the next step.

NATS delivers messages from different connections in a different interleaving
on every run, and a client dispatches each subscription on its own task. So a
receiver never applies a message when it arrives. It buffers it, and at the
start of step ``k`` hands everything published during steps before ``k`` to the
step rule (services/kernel/steprule.py), which applies it in (mission time,
source, sequence) order. The tick of step ``k`` says how
many messages were published on each subject during step ``k - 1``; the
receiver waits until it holds that many before it applies them, so a message
still on its way cannot slip into a later step.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from services.kernel.envelope import Envelope


class Inbox:
    """Messages held until the step that applies them.

    After a rollback (services/kernel/clock.py) messages published before the
    restored step may still be on their way, and steps after it are run again,
    publishing what they published before: a message of a step already taken
    (at or below :attr:`floor`) is stale, and one whose (source, sequence) is
    held already is a duplicate. Both are dropped: the mission is deterministic,
    so the copy kept is the same message.
    """

    def __init__(self) -> None:
        #: Messages held, in arrival order (read-only outside: ``if inbox.held``
        #: is the per-step test, a list's truth without a call to ``__len__``).
        self.held: list[Envelope] = []
        #: The last step whose messages were taken: later arrivals of it are stale.
        self.floor = -1
        self._keys: set[tuple[str, int]] = set()  # (src, seq) held
        self._counts: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._changed = asyncio.Event()
        self._closed = False

    def add(self, env: Envelope, subject: str) -> bool:
        """Hold ``env``; False (and nothing held) if it is stale or a duplicate."""
        key = (env.src, env.seq)
        if env.step <= self.floor or key in self._keys:
            return False
        self._keys.add(key)
        self.held.append(env)
        self._counts[env.step][subject] += 1
        self._changed.set()
        return True

    def add_local(self, env: Envelope) -> None:
        """A message produced in-process (e.g. a gRPC command): no count to match."""
        self._keys.add((env.src, env.seq))
        self.held.append(env)

    def reset(self, held: list[Envelope], floor: int) -> None:
        """After a restore: exactly ``held`` (the snapshot's), nothing at or below
        ``floor`` accepted any more."""
        self.held = list(held)
        self._keys = {(e.src, e.seq) for e in held}
        self._counts.clear()
        self.floor = floor

    def missing(self, step: int, expect: dict[str, int]) -> dict[str, int]:
        have = self._counts.get(step, {})
        return {s: n - have.get(s, 0) for s, n in expect.items() if have.get(s, 0) < n}

    async def wait_for(self, step: int, expect: dict[str, int], timeout_s: float) -> dict[str, int]:
        """Wait until every expected message of ``step`` is held; return what is missing."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while missing := self.missing(step, expect):
            remaining = deadline - loop.time()
            if remaining <= 0 or self._closed:
                return missing
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return self.missing(step, expect)
        return {}

    def close(self) -> None:
        """The service is stopping: a wait in progress ends now, not at its timeout."""
        self._closed = True
        self._changed.set()

    def take(self, up_to_step: int) -> list[Envelope]:
        """Remove and return the messages of steps <= ``up_to_step``, in arrival
        order (the step rule, services/kernel/steprule.py, orders them)."""
        self.floor = max(self.floor, up_to_step)
        ready = [e for e in self.held if e.step <= up_to_step]
        if not ready:
            return []
        self.held = [e for e in self.held if e.step > up_to_step]
        self._keys.difference_update((e.src, e.seq) for e in ready)
        for step in [s for s in self._counts if s <= up_to_step]:
            del self._counts[step]
        return ready

    def __len__(self) -> int:
        return len(self.held)
