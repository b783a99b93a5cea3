"""Deployment files (`deploy/k8s/`, `deploy/systemd/`): valid against the Kubernetes schemas
(kubernetes-validate, offline), consistent with each other, and calling PALS with flags it has
(or flags listed here as planned, which must not exist yet: move them out when they land)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
UNIT = ROOT / "deploy" / "systemd" / "pals-serve.service"
UNIT_ENV = ROOT / "deploy" / "systemd" / "pals-serve.env"
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")
"""The oldest Kubernetes the manifests target, and the newest kubernetes-validate knows."""

PLANNED_FLAGS = {
    # Flags the manifests use before they land (none today: the attach mode and --node-name exist).
    "run": set(),
    "coordinate": set(),
    "serve": set(),
}
PLANNED_FLAG_VALUES: dict[tuple[str, str], set[str]] = {}
EXTERNAL = {("ConfigMap", "pals-profile"), ("PersistentVolumeClaim", "models")}
"""Objects the manifests use that the operator creates (docs/production.md says how)."""


def _documents() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue  # kustomize's own file, not an object (checked on its own)
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


def _by_kind(kind: str) -> list[dict]:
    return [doc for _, doc in _documents() if doc["kind"] == kind]


def _pod_specs() -> list[tuple[str, dict]]:
    return [(doc["metadata"]["name"], doc["spec"]["template"]) for doc in _documents_of(("StatefulSet", "Deployment"))]


def _documents_of(kinds) -> list[dict]:
    return [doc for _, doc in _documents() if doc["kind"] in kinds]


def _container(name: str) -> dict:
    for _, template in _pod_specs():
        for container in template["spec"].get("containers", []) + template["spec"].get("initContainers", []):
            if container["name"] == name:
                return container
    raise AssertionError(f"no container {name!r} in deploy/k8s")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_core_objects_validate_against_the_kubernetes_schemas(version):
    import kubernetes_validate

    checked = 0
    for name, doc in _documents():
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # custom resources: checked structurally below
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']} invalid for Kubernetes {version}: {error.message}")
        checked += 1
    assert checked >= 6  # Secret, 3 Services, StatefulSet, Deployment


def test_the_validator_rejects_a_broken_manifest():
    import kubernetes_validate

    deployment = next(doc for doc in _by_kind("Deployment"))
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["replica"] = broken["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_servicemonitor_scrapes_the_agent_and_coordinator_services():
    (monitor,) = _by_kind("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["metadata"]["name"]
    spec = monitor["spec"]
    assert spec["endpoints"] and all(e["port"] and e.get("path", "/metrics") == "/metrics" for e in spec["endpoints"])
    selected = []
    for service in _by_kind("Service"):
        labels = service["metadata"].get("labels", {})
        ok = all(labels.get(k) == v for k, v in spec["selector"].get("matchLabels", {}).items())
        for expression in spec["selector"].get("matchExpressions", []):
            assert expression["operator"] == "In"
            ok = ok and labels.get(expression["key"]) in expression["values"]
        if ok:
            selected.append(service)
            port_names = {p["name"] for p in service["spec"]["ports"]}
            assert all(e["port"] in port_names for e in spec["endpoints"]), service["metadata"]["name"]
    # The rules select job="pals-agent" and job="pals-coordinator": the operator's job label is the Service name.
    assert sorted(s["metadata"]["name"] for s in selected) == ["pals-agent", "pals-coordinator"]
    rules = (ROOT / "deploy" / "prometheus" / "pals-rules.yml").read_text()
    assert 'job="pals-agent"' in rules and 'job="pals-coordinator"' in rules


def test_prometheusrule_is_generated_from_the_rules_file():
    (rule,) = _by_kind("PrometheusRule")
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "pals-rules.yml").read_text())
    assert rule["spec"]["groups"] == rules["groups"]
    result = subprocess.run([sys.executable, str(K8S / "make_prometheusrule.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_kustomization_lists_existing_files_but_not_the_placeholder_secret():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource
    assert "secret-endpoint-token.yaml" not in kustomization["resources"]


def test_services_select_pods_and_name_their_ports():
    templates = {name: template for name, template in _pod_specs()}
    for service in _by_kind("Service"):
        selector = service["spec"]["selector"]
        matching = [t for t in templates.values() if all(t["metadata"]["labels"].get(k) == v for k, v in selector.items())]
        assert matching, f"Service {service['metadata']['name']} selects no pod"
        ports = {p["name"] for t in matching for c in t["spec"]["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, f"{service['metadata']['name']}: no container port {port['targetPort']}"


def test_every_referenced_secret_configmap_and_claim_exists():
    defined = {(doc["kind"], doc["metadata"]["name"]) for _, doc in _documents()} | EXTERNAL
    secret = next(doc for doc in _by_kind("Secret") if doc["metadata"]["name"] == "pals-endpoint-token")
    for _, template in _pod_specs():
        for container in template["spec"]["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ("Secret", ref["name"]) in defined and ref["key"] in secret["stringData"]
        for volume in template["spec"].get("volumes", []):
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in defined
            if "persistentVolumeClaim" in volume:
                assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in defined


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def _mounts(container: dict) -> dict[str, str]:
    return {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}


def test_sidecar_shares_the_cap_channel_and_the_gpus_with_vllm():
    vllm, agent = _container("vllm"), _container("pals-agent")
    command = " ".join(vllm.get("command", []) + vllm.get("args", []))
    assert "--scheduler-cls pals.integrations.vllm_scheduler.PalsScheduler" in command
    agent_args = dict(a.split("=", 1) for a in agent["args"] if a.startswith("--"))
    channel = _env(vllm)["PALS_CAP_CHANNEL"]
    assert agent_args["--cap-channel"] == channel
    assert _mounts(vllm)["pals-run"] == _mounts(agent)["pals-run"] and channel.startswith(_mounts(agent)["pals-run"] + "/")
    assert _env(vllm)["PYTHONPATH"] == _mounts(vllm)["pals-lib"] == _mounts(_container("pals-lib"))["pals-lib"]
    # The GPU list vLLM was given reaches the agent through the shared volume.
    assert agent_args["--gpu-uuids-file"] in command
    # Only vLLM requests GPUs; the agent reaches them through the runtime and may set power limits.
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == vllm["resources"]["requests"]["nvidia.com/gpu"]
    assert "nvidia.com/gpu" not in str(agent["resources"])
    assert _env(agent)["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert "SYS_ADMIN" in agent["securityContext"]["capabilities"]["add"]
    assert agent_args["--endpoint-host"] == "0.0.0.0" and "PALS_ENDPOINT_TOKEN" in _env(agent)
    assert agent_args["--max-num-seqs"] in command and agent_args["--tp"] in command


def _options(command: str) -> set[str]:
    from pals.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return {s for action in subparsers.choices[command]._actions for s in action.option_strings}


def _choices(command: str, flag: str) -> set[str]:
    from pals.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    action = next(a for a in subparsers.choices[command]._actions if flag in a.option_strings)
    return set(action.choices or ())


def _check_flags(command: str, argv: list[str], where: str) -> None:
    existing = _options(command)
    landed = PLANNED_FLAGS[command] & existing
    assert not landed, f"pals {command} has {sorted(landed)} now: remove them from PLANNED_FLAGS in {__file__}"
    for arg in argv:
        if not arg.startswith("--") or arg == "--":
            continue
        flag, _, value = arg.partition("=")
        assert flag in existing | PLANNED_FLAGS[command], f"{where}: pals {command} has no {flag}"
        planned_values = PLANNED_FLAG_VALUES.get((command, flag), set())
        if value and flag in existing and _choices(command, flag):
            assert not (planned_values & _choices(command, flag)), f"{flag} {value} landed: update PLANNED_FLAG_VALUES"
            assert value in _choices(command, flag) | planned_values, f"{where}: {flag}={value} is not a choice"


def test_manifests_call_pals_with_flags_it_has_or_plans():
    for _, template in _pod_specs():
        for container in template["spec"]["containers"]:
            if container.get("command") == ["pals"]:
                command, *argv = container["args"]
                _check_flags(command, argv, f"container {container['name']}")


def _unit_entries() -> dict[str, list[tuple[str, str]]]:
    """systemd's syntax: sections, repeated keys, backslash continuation lines."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current, pending = None, ""
    for raw in UNIT.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = []
            continue
        key, _, value = line.partition("=")
        sections[current].append((key.strip(), value.strip()))
    return sections


def test_systemd_unit_restarts_restores_and_keeps_nvml():
    sections = _unit_entries()
    service = sections["Service"]
    values = {}
    for key, value in service:
        values.setdefault(key, []).append(value)
    assert values["Restart"] == ["on-failure"]
    assert any(v.endswith("pals restore") or "pals restore " in v for v in values["ExecStopPost"])
    assert values["EnvironmentFile"] == ["/etc/pals/pals-serve.env"]
    assert values["AmbientCapabilities"] == ["CAP_SYS_ADMIN"] == values["CapabilityBoundingSet"]
    # NVML and CUDA need /dev/nvidia*: no PrivateDevices, and the NVIDIA devices allowed.
    assert values.get("PrivateDevices", ["no"]) == ["no"]
    assert "char-nvidia* rw" in values["DeviceAllow"]
    assert values.get("MemoryDenyWriteExecute", ["no"]) == ["no"]
    assert values["KillMode"] == ["mixed"] and sections["Install"] == [("WantedBy", "multi-user.target")]
    # ExecStart: pals serve with flags it has; every ${VAR} it uses is set in the example env file.
    (exec_start,) = values["ExecStart"]
    argv = exec_start.split()
    assert argv[0].endswith("/pals") and argv[1] == "serve"
    _check_flags("serve", argv[2:], "pals-serve.service")
    env = dict(line.split("=", 1) for line in UNIT_ENV.read_text().splitlines() if line and not line.startswith("#"))
    for name in re.findall(r"\$\{?([A-Z_]+)\}?", exec_start):
        assert name in env, f"{name} is not in pals-serve.env"
    _check_flags("serve", env["PALS_SERVE_ARGS"].split(" -- ")[0].split(), "pals-serve.env")
    assert "PALS_ENDPOINT_TOKEN" in env


def test_systemd_analyze_verifies_the_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (Debian: systemd)")
    # verify needs the executables to exist: stand /bin/true in for the pals install.
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/pals/venv/bin/pals", "/bin/true"))
    result = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
    ours = [line for line in (result.stdout + result.stderr).splitlines() if UNIT.name in line]
    assert result.returncode == 0 and not ours, "\n".join(ours) or result.stderr


def test_the_coordinator_names_each_node_as_its_agent_labels_its_metrics():
    """The rules join the coordinator's `node` label with the agent's: the agent's --node-name (the
    pod's name) must be the NAME of the coordinator's --node NAME=URL for every pod of the StatefulSet."""
    from pals.control.metrics import check_node_name

    (statefulset,) = _by_kind("StatefulSet")
    pods = {f"{statefulset['metadata']['name']}-{i}" for i in range(statefulset["spec"]["replicas"])}
    agent = _container("pals-agent")
    assert "--node-name=$(POD_NAME)" in agent["args"]
    field = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in agent["env"]}
    assert field["POD_NAME"] == "metadata.name"
    coordinator = _container("coordinator")
    named = {arg.split("=", 2)[1] for arg in coordinator["args"] if arg.startswith("--node=")}
    assert named == pods
    assert all(check_node_name(name) == name for name in named)
