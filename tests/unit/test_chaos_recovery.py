"""scripts/chaos.py's reading of ground's clock after a fault: when the mission
ran again and when it was back where the fault found it."""

from __future__ import annotations

from tests.chaos_script import chaos

FAULT_AT_S = 100.0  # mission s at the fault
SUM_ROUNDING_S = 1e-9  # wall s: what adding the gap to a sample's time may round off


def _recovery(samples: list[tuple[float, float]]) -> tuple[float | None, float | None]:
    rec = chaos.Recovery(FAULT_AT_S, samples)
    return rec.to_running_s, rec.to_caught_up_s


def test_steps_right_after_the_fault_then_a_rollback_do_not_count_as_running() -> None:
    # One step after a reconnect, 5 s of waiting, a rollback to 60 s, then stepping.
    samples = [(0.1, 100.0), (0.2, 101.0), (5.0, 101.0), (5.1, 60.0), (5.2, 61.0),
               (5.3, 90.0), (5.4, 101.0), (5.5, 102.0)]
    assert _recovery(samples) == (5.2, 5.4)


def test_a_stall_longer_than_the_gap_starts_the_running_stretch_again() -> None:
    gap_s = chaos.STALL_GAP_S
    samples = [(0.1, 99.0), (0.2, 99.5), (0.2 + gap_s, 99.5), (0.3 + gap_s, 99.8),
               (0.4 + gap_s, 100.5)]
    running_s, caught_up_s = _recovery(samples)
    assert running_s is not None and caught_up_s is not None
    assert abs(running_s - (0.3 + gap_s)) < SUM_ROUNDING_S
    assert abs(caught_up_s - (0.4 + gap_s)) < SUM_ROUNDING_S


def test_never_past_the_fault_is_not_recovered() -> None:
    assert _recovery([(0.1, 50.0), (0.2, 60.0), (0.3, 99.0)]) == (None, None)
    assert _recovery([]) == (None, None)


def test_cells_name_their_fault_and_window_and_place_it_inside_the_window() -> None:
    labels = [cell.label for cell in chaos.full_matrix()]
    assert len(labels) == 6 * 3 + 2 and len(set(labels)) == len(labels)
    assert {"lander@descent", "ground@entry", "nats-server@descent",
            "nats-server-stall@entry"} <= set(labels)
    window = chaos.DESCENT
    start_s = chaos.mission_s_from_utc(window.start_utc)
    end_s = chaos.mission_s_from_utc(window.end_utc)
    for cell in chaos.full_matrix():
        point_s = cell.point_s(6)
        if cell.window == window:
            assert start_s < point_s < end_s
        assert point_s == cell.point_s(6)  # seeded: the same point every time
