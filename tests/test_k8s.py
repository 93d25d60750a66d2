"""deploy/k8s stays valid and in step with the code: every manifest validates against the
Kubernetes API schemas (kubernetes-validate, strict: unknown fields fail), probes point at
routes and checks that exist, grace periods cover the drain timeouts, engines request their
GPU and run the command their probe checks, the ConfigMap holds only valid settings, and the
NATS chart's values configure the servers as nats.conf does. No cluster runs here."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from funspeech.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
KUBERNETES = "1.30"  # oldest version the manifests are checked against (Deployment, PDB v1)
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name not in ("kustomization.yaml",
                                                                   "nats-values.yaml"))  # fmt: skip


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def objects(kind: str | None = None) -> list[dict[str, Any]]:
    found = [d for p in MANIFESTS for d in documents(p)]
    return [d for d in found if kind is None or d["kind"] == kind]


def deployment(name: str) -> dict[str, Any]:
    return next(d for d in objects("Deployment") if d["metadata"]["name"] == name)


def container(dep: dict[str, Any]) -> dict[str, Any]:
    (only,) = dep["spec"]["template"]["spec"]["containers"]
    return only


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifests_validate_against_the_kubernetes_schemas(path: Path) -> None:
    for doc in documents(path):
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_kubernetes_validate_rejects_unknown_fields() -> None:
    doc = objects("Deployment")[0]
    bad = {**doc, "spec": {**doc["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    (kustomization,) = documents(K8S / "kustomization.yaml")
    assert sorted(kustomization["resources"]) == sorted(p.name for p in MANIFESTS)
    namespaced = [d for d in objects() if d["kind"] != "Namespace"]
    assert {d["metadata"]["namespace"] for d in namespaced} == {"funspeech"}


def test_bridge_probes_service_and_grace() -> None:
    from bridge.info import PROBES

    dep = deployment("funspeech-bridge")
    spec = dep["spec"]["template"]["spec"]
    bridge = container(dep)
    assert bridge["command"] == ["python", "-m", "bridge"]
    env = {e["name"]: e["value"] for e in bridge["env"]}
    assert env["PORT"] == "8000" and env["WORKERS"] == "1"
    assert bridge["ports"] == [{"name": "http", "containerPort": 8000}]
    assert bridge["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert bridge["readinessProbe"]["httpGet"]["path"] == "/health"
    assert {"/health/live", "/health"} == set(PROBES)
    drain = Settings.model_validate({}).bridge_drain_timeout
    assert spec["terminationGracePeriodSeconds"] >= drain + 10
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == "8000"
    (service,) = objects("Service")
    assert service["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"


ENGINES = {
    "funspeech-asr-gpu": ("asr", "cuda:0", 1),
    "funspeech-tts-gpu": ("tts", "cuda:0", 1),
    "funspeech-asr-cpu": ("asr", "cpu", 0),
    "funspeech-tts-cpu": ("tts", "cpu", 0),
}


@pytest.mark.parametrize("name", list(ENGINES))
def test_engine_deployments(name: str) -> None:
    task, device, gpus = ENGINES[name]
    dep = deployment(name)
    engine = container(dep)
    assert engine["command"] == ["python", "-m", "engines", "--task", task, "--device", device]
    check = ["python", "deploy/healthcheck.py", "engine", device, "--task", task]
    for probe in ("startupProbe", "readinessProbe"):
        if probe in engine:
            assert engine[probe]["exec"]["command"] == check, probe
    assert "readinessProbe" in engine
    assert "livenessProbe" not in engine, "a NATS outage must not restart the engines"
    resources = engine["resources"]
    if gpus:
        assert resources["requests"]["nvidia.com/gpu"] == gpus
        assert resources["limits"]["nvidia.com/gpu"] == gpus
    else:
        assert "nvidia.com/gpu" not in str(resources)
    drain = Settings.model_validate({}).engine_drain_timeout
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= drain + 10
    refs = [r.get("configMapRef", r.get("secretRef"))["name"] for r in engine["envFrom"]]
    assert refs == ["funspeech-config", "funspeech-secrets"]
    for item in engine.get("env", []):
        assert item["name"].lower() in Settings.model_fields, item["name"]


def test_configmap_holds_valid_settings() -> None:
    (config,) = objects("ConfigMap")
    data = config["data"]
    unknown = {k for k in data if k.lower() not in Settings.model_fields}
    assert not unknown, unknown
    settings = Settings.model_validate({k.lower(): v for k, v in data.items()})
    assert settings.jetstream_replicas == 3 and settings.log_format == "json"
    assert settings.required_tasks() == ["asr", "tts"]
    for dep in objects("Deployment"):
        env = container(dep).get("env", [])
        assert not {e["name"] for e in env} & set(data), "one place per setting"


def conf_value(name: str) -> str:
    m = re.search(rf'(?m)^{name}:\s*"?([^"\n]+)"?\s*$', (ROOT / "nats.conf").read_text())
    assert m, name
    return m.group(1).strip()


def test_nats_chart_values_configure_the_servers_as_nats_conf() -> None:
    (values,) = documents(K8S / "nats-values.yaml")
    config = values["config"]
    assert config["cluster"]["enabled"] is True and config["cluster"]["replicas"] == 3
    assert config["jetstream"]["enabled"] is True
    assert config["jetstream"]["fileStore"]["pvc"]["size"]
    merge = config["merge"]
    for name in ("max_payload", "max_pending"):
        assert merge[name] == f"<< {conf_value(name)} >>", name
    for name in ("write_deadline", "ping_interval", "lame_duck_duration", "lame_duck_grace_period"):
        assert str(merge[name]) == conf_value(name), name
    assert str(merge["ping_max"]) == conf_value("ping_max")
    (configmap,) = objects("ConfigMap")
    host = re.match(r"nats://([^:/]+):4222$", configmap["data"]["NATS_URL"])
    assert host and host.group(1) == values["fullnameOverride"], "the chart's client Service"
    assert int(configmap["data"]["JETSTREAM_REPLICAS"]) == config["cluster"]["replicas"]
