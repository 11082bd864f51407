"""Clohessy-Wiltshire relative motion and the capture envelope, against the
equations they solve and the envelope's stated limits; Lambert's failures."""

from __future__ import annotations

import numpy as np
import pytest

from services.dynamics.guidance import rendezvous as rz

N_RAD_S = 1.0e-3  # a ~105-minute orbit, like the orbiter's 200 km one
MATRIX_TOL = 1e-9


def _hcw_matrix(n: float) -> np.ndarray:
    """Hill-Clohessy-Wiltshire equations (x radial, y along-track, z normal):
    x'' = 3 n^2 x + 2 n y',  y'' = -2 n x',  z'' = -n^2 z (Vallado, eq. 6-15)."""
    a = np.zeros((6, 6))
    a[:3, 3:] = np.eye(3)
    a[3, 0], a[3, 4] = 3.0 * n * n, 2.0 * n
    a[4, 3] = -2.0 * n
    a[5, 2] = -n * n
    return a


def test_cw_transition_starts_at_the_identity() -> None:
    np.testing.assert_allclose(rz.cw_state_transition(N_RAD_S, 0.0), np.eye(6), atol=MATRIX_TOL)


@pytest.mark.parametrize("t_s", [300.0, 1_000.0, 4_000.0])
def test_cw_transition_solves_the_hcw_equations(t_s: float) -> None:
    h = 1e-2
    phi = rz.cw_state_transition(N_RAD_S, t_s)
    d_phi = (rz.cw_state_transition(N_RAD_S, t_s + h)
             - rz.cw_state_transition(N_RAD_S, t_s - h)) / (2.0 * h)
    np.testing.assert_allclose(d_phi, _hcw_matrix(N_RAD_S) @ phi, atol=1e-7)


def test_cw_transitions_compose() -> None:
    phi = rz.cw_state_transition
    np.testing.assert_allclose(phi(N_RAD_S, 1_700.0),
                               phi(N_RAD_S, 1_200.0) @ phi(N_RAD_S, 500.0), atol=1e-6)


def test_cw_transfer_arrives_with_the_asked_velocity() -> None:
    r0, v0 = np.array([-2_000.0, -10_000.0, 300.0]), np.array([1.0, 2.0, -0.5])
    target_r, target_v = np.array([0.0, -1_000.0, 0.0]), np.array([0.0, 0.5, 0.0])
    tof = 1_500.0
    dv1, dv2 = rz.cw_transfer_dv(r0, v0, target_r, tof, N_RAD_S, target_v)
    end = rz.cw_state_transition(N_RAD_S, tof) @ np.concatenate([r0, v0 + dv1])
    np.testing.assert_allclose(end[:3], target_r, atol=1e-6)
    np.testing.assert_allclose(end[3:] + dv2, target_v, atol=1e-9)


#: The module's capture envelope: within 0.30 m, 0.10 m off the docking axis
#: (y), closing at most 0.05 m/s with 0.02 m/s across it.
@pytest.mark.parametrize(("rel_r", "rel_v", "ok"), [
    ((0.0, 0.30, 0.0), (0.0, 0.0, 0.0), True),
    ((0.0, 0.31, 0.0), (0.0, 0.0, 0.0), False),
    ((0.10, 0.0, 0.0), (0.0, 0.0, 0.0), True),
    ((0.0, 0.0, 0.10), (0.0, 0.0, 0.0), True),
    ((0.0, 0.0, 0.11), (0.0, 0.0, 0.0), False),
    ((0.0, 0.0, 0.0), (0.0, 0.05, 0.0), True),
    ((0.0, 0.0, 0.0), (0.0, -0.051, 0.0), False),
    ((0.0, 0.0, 0.0), (0.02, 0.0, 0.0), True),
    ((0.0, 0.0, 0.0), (0.0, 0.0, 0.02), True),
    ((0.0, 0.0, 0.0), (0.0, 0.0, 0.021), False),
])
def test_capture_envelope_includes_its_limits(rel_r: tuple[float, float, float],
                                              rel_v: tuple[float, float, float],
                                              ok: bool) -> None:
    assert rz.capture_ok(rel_r, rel_v) is ok


def test_lambert_refuses_opposite_points_with_its_time_of_flight() -> None:
    with pytest.raises(rz.LambertError, match=r"tof=3000\.0 s: r1 and r2 are 180 deg") as err:
        rz.lambert([1_800e3, 0.0, 0.0], [-1_900e3, 0.0, 0.0], 3_000.0)
    assert err.value.tof_s == 3_000.0
    assert err.value.reason.startswith("r1 and r2 are 180 deg apart")


def test_lambert_says_so_when_no_conic_is_fast_enough() -> None:
    # 1,000 km in a millisecond is beyond the hyperbolic bound it searches.
    with pytest.raises(rz.LambertError, match="did not converge") as err:
        rz.lambert([1_800e3, 0.0, 0.0], [1_800e3, 1_000e3, 0.0], 1e-3)
    assert err.value.tof_s == 1e-3
    assert err.value.reason == "bisection on psi did not converge"
