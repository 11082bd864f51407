"""The pods' mission label (used to label process_* series) matches the mission id."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = Path(sys.executable).parent / "kubectl"


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_pod_mission_label_matches_config(overlay: str) -> None:
    out = subprocess.run([str(KUBECTL), "kustomize", str(ROOT / "deploy/k8s/overlays" / overlay)],
                         check=True, capture_output=True, text=True).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    config = next(d for d in docs if d["kind"] == "ConfigMap"
                  and d["metadata"]["name"].startswith("twin-config"))
    mission = config["data"]["TWIN_MISSION_ID"]
    deployments = [d for d in docs if d["kind"] == "Deployment"
                   and d["metadata"]["labels"].get("app.kubernetes.io/component") == "twin-service"]
    assert len(deployments) == 6
    for d in deployments:
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert labels.get("change6.twin/mission") == mission, d["metadata"]["name"]
