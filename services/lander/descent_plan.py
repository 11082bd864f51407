"""Plan the lander's way from the parking orbit to powered-descent ignition.

Three impulsive burns (the 7,500 N engine gives the ~3.3 t stack 2.3 m/s^2,
so these 10-30 s burns are impulsive to metres):

1. ``descent-phasing-1`` soon after the command: a tangential burn that
   changes the period so the along-track phase error at DOI is flown out
   over the ~2.5 days before PDI (Kepler mean motions; the Lambert arc of
   burn 2 absorbs what that neglects);
2. ``descent-phasing-2`` 0.7 revolution before DOI: a Lambert arc, shot
   through the perturbed force model, onto the DOI point at the DOI time; it
   also takes out most of the plane drift J2 left since the orbiter's trim;
3. ``descent-orbit-lowering`` at the DOI point: the velocity of the nominal
   descent ellipse there, whose ~15 km perilune is the ignition state of
   ``guidance.descent.nominal_ignition_state`` (20 deg uprange of the site)
   at the PDI time.

The DOI state is the nominal ignition state propagated *back* half a
revolution through the full lunar force model, so the coast after DOI ends
on the nominal ignition state, not on a two-body approximation of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from services.dynamics.constants import GM_MOON_M3_S2
from services.dynamics.guidance.descent import nominal_ignition_state
from services.dynamics.kepler import elements_from_rv
from services.kernel.onboard import PlannedBurn, Vec, planned, predict, shoot_lambert

MU = GM_MOON_M3_S2
#: Phasing burn this long after the command (the clock stops on it).
PHASING_LEAD_S = 600.0
#: The Lambert correction leaves this fraction of a parking revolution to DOI
#: (a ~250 deg arc: well away from the degenerate 180/360 deg geometries).
CORRECTION_REV_FRACTION = 0.7


@dataclass(frozen=True)
class DescentTargets:
    """Where the descent orbit must be: DOI point and PDI state (MCI)."""

    t_doi_s: float
    r_doi_m: Vec
    v_doi_after_m_s: Vec
    t_pdi_s: float
    r_pdi_m: Vec
    v_pdi_m_s: Vec


def descent_targets(t_pdi_s: float) -> DescentTargets:
    ign = nominal_ignition_state(t_pdi_s)
    el = elements_from_rv(ign.r_mci_m, ign.v_mci_m_s, MU)
    half_period = math.pi * math.sqrt(el.a_m**3 / MU)
    t_doi = t_pdi_s - half_period
    r_doi, v_doi = predict(ign.r_mci_m, ign.v_mci_m_s, t_pdi_s, t_doi)
    return DescentTargets(t_doi, r_doi, v_doi, t_pdi_s, ign.r_mci_m, ign.v_mci_m_s)


def _signed_angle(a: Vec, b: Vec, normal: Vec) -> float:
    """Angle from ``a`` to ``b`` about ``normal``, in (-pi, pi]."""
    return math.atan2(float(np.cross(a, b) @ normal), float(a @ b))


def plan_phasing_burn(r_m: Vec, v_m_s: Vec, t_s: float, targets: DescentTargets,
                      t_correction_s: float) -> PlannedBurn:
    """Tangential burn at ``t_s`` that gains the phase missing at DOI by the
    time of the correction burn."""
    r_pred, _ = predict(r_m, v_m_s, t_s, targets.t_doi_s)
    normal = np.cross(r_m, v_m_s)
    normal /= np.linalg.norm(normal)
    d_theta = _signed_angle(r_pred, targets.r_doi_m, normal)
    el = elements_from_rv(r_m, v_m_s, MU)
    n0 = math.sqrt(MU / el.a_m**3)
    n1 = n0 + d_theta / (t_correction_s - t_s)
    a1 = (MU / (n1 * n1)) ** (1.0 / 3.0)
    r = float(np.linalg.norm(r_m))
    speed = math.sqrt(MU * (2.0 / r - 1.0 / a1))
    v_hat = v_m_s / np.linalg.norm(v_m_s)
    return planned(t_s, (speed - float(np.linalg.norm(v_m_s))) * v_hat, "descent-phasing-1")


def correction_time_s(targets: DescentTargets, r_m: Vec, v_m_s: Vec) -> float:
    el = elements_from_rv(r_m, v_m_s, MU)
    period = 2.0 * math.pi * math.sqrt(el.a_m**3 / MU)
    return targets.t_doi_s - CORRECTION_REV_FRACTION * period


def plan_correction_burn(r_m: Vec, v_m_s: Vec, t_s: float, targets: DescentTargets) -> PlannedBurn:
    v_new = shoot_lambert(r_m, v_m_s, t_s, targets.r_doi_m, targets.t_doi_s)
    return planned(t_s, v_new - v_m_s, "descent-phasing-2")


def plan_doi_burn(v_m_s: Vec, targets: DescentTargets) -> PlannedBurn:
    return planned(targets.t_doi_s, targets.v_doi_after_m_s - v_m_s, "descent-orbit-lowering")


def plan_all(r_m: Vec, v_m_s: Vec, t_s: float, t_pdi_s: float
             ) -> tuple[DescentTargets, list[PlannedBurn]]:
    """The three burns as planned now (2 and 3 are re-planned on board from
    the state really reached, so they absorb execution errors)."""
    targets = descent_targets(t_pdi_s)
    t1 = t_s + PHASING_LEAD_S
    r1, v1 = predict(r_m, v_m_s, t_s, t1)
    t2 = correction_time_s(targets, r1, v1)
    if t2 <= t1 + 3_600.0:
        raise ValueError(f"PDI at {t_pdi_s:.0f} s is too soon to phase from {t_s:.0f} s")
    b1 = plan_phasing_burn(r1, v1, t1, targets, t2)
    r2, v2 = predict(r1, v1 + np.asarray(b1.dv_mci_m_s), t1, t2)
    b2 = plan_correction_burn(r2, v2, t2, targets)
    _, v3 = predict(r2, v2 + np.asarray(b2.dv_mci_m_s), t2, targets.t_doi_s)
    return targets, [b1, b2, plan_doi_burn(v3, targets)]
