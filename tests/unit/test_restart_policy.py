"""The supervisor's restart policy: which exits are restarted, the backoff, the cap."""

from __future__ import annotations

import signal

import pytest

from services.cli.restarts import (
    EXIT_BAD_CONFIG,
    EXIT_SERVICE_FAILED,
    Backoff,
    Restart,
    RestartPolicy,
    describe_exit,
    is_restartable,
)

#: Up for a moment only: every death counts toward the backoff streak.
BRIEFLY_UP_S = 1.0


def _delays(backoff: Backoff, deaths: int, *, start_s: float = 0.0, every_s: float = 0.1,
            up_s: float = BRIEFLY_UP_S) -> list[float | None]:
    return [backoff.next_delay_s(start_s + i * every_s, up_s) for i in range(deaths)]


def test_the_delay_doubles_from_the_first_up_to_the_cap() -> None:
    backoff = Backoff(RestartPolicy(first_delay_s=0.2, max_delay_s=5.0, max_restarts=8))
    assert _delays(backoff, 8) == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]


def test_a_child_that_stayed_up_long_enough_starts_the_backoff_again() -> None:
    policy = RestartPolicy(first_delay_s=0.2, stable_after_s=30.0, window_s=60.0)
    backoff = Backoff(policy)
    assert _delays(backoff, 3) == [0.2, 0.4, 0.8]
    assert backoff.next_delay_s(100.0, up_s=29.9) == 1.6
    assert backoff.next_delay_s(200.0, up_s=30.0) == 0.2


def test_one_restart_too_many_within_the_window_gives_up_and_says_so() -> None:
    backoff = Backoff(RestartPolicy(max_restarts=3, window_s=60.0))
    assert None not in _delays(backoff, 3, every_s=10.0)
    assert backoff.next_delay_s(59.9, BRIEFLY_UP_S) is None
    assert backoff.gave_up() == "restarted 3 times within 60 s already: giving up"


def test_restarts_older_than_the_window_no_longer_count() -> None:
    backoff = Backoff(RestartPolicy(max_restarts=2, window_s=60.0))
    assert None not in _delays(backoff, 2, every_s=1.0)
    assert backoff.next_delay_s(61.0, BRIEFLY_UP_S) is not None  # the one at 0 s has left


def test_max_restarts_zero_restarts_nothing() -> None:
    backoff = Backoff(RestartPolicy(max_restarts=0))
    assert backoff.next_delay_s(0.0, 1000.0) is None
    assert backoff.gave_up() == "restarts are off"


@pytest.mark.parametrize(("code", "restarted"), [
    (-signal.SIGKILL, True), (-signal.SIGSEGV, True), (-signal.SIGTERM, True),
    (1, True), (0, True), (EXIT_SERVICE_FAILED, False), (EXIT_BAD_CONFIG, False),
])
def test_a_failure_inside_or_a_bad_configuration_is_never_restarted(
        code: int, restarted: bool) -> None:
    assert is_restartable(code) is restarted


def test_exits_are_described_as_the_cli_prints_them() -> None:
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(1) == "exit code 1"
    assert describe_exit(70) == "exit code 70 (a failure inside the service)"
    assert describe_exit(2) == "exit code 2 (a bad configuration)"
    line = Restart("lander", 101, 202, -signal.SIGKILL, count=1, delay_s=0.2).describe()
    assert line == "restarted lander (pid 101 -> 202) after SIGKILL, restart 1"
    assert Restart("ground", 1, 2, 1, 3, 0.8).describe().endswith("after exit code 1, restart 3")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"first_delay_s": 0.0}, "need 0 < first"),
    ({"first_delay_s": 6.0, "max_delay_s": 5.0}, "need 0 < first"),
    ({"max_restarts": -1}, "use 0 .never. or more"),
    ({"window_s": 0.0}, "must be > 0 s"),
])
def test_a_bad_policy_says_what_is_wrong(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RestartPolicy(**kwargs)  # type: ignore[arg-type]


# --- what the live view and `twin status` show ------------------------------------


def test_the_live_view_shows_restarts_once_there_are_any() -> None:
    from rich.console import Console

    from services.cli.progress import Snapshot, render_snapshot, restarts_line
    from services.kernel.twin_pb import clock_pb2

    counts = {"orbiter": 0, "lander": 1, "nats-server": 2}
    assert restarts_line(counts) == "restarts: lander 1, nats-server 2"
    assert restarts_line(dict.fromkeys(counts, 0)) == ""
    snapshot = Snapshot(clock_pb2.ClockState(mode="running"), {})
    for restarts, shown in ((counts, True), ({}, False), (None, False)):
        console = Console(record=True, width=120)
        console.print(render_snapshot(snapshot, restarts=restarts))
        assert ("restarts: lander 1, nats-server 2" in console.export_text()) is shown
