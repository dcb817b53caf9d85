"""kubernetes/: the manifests validate offline, and agree with the launcher they run.

Every manifest is checked with kubernetes-validate in strict mode (unknown fields rejected) against
the Kubernetes schemas, and the container's command line is parsed by the launcher's own argparse
parser, so a renamed option, a probe on the wrong port or replicas that differ from ``--shard
auto/N`` fail here rather than in a cluster.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List

import pytest
from helpers import daemon, wait_for

from epics_bridge.cli import run
from epics_bridge.ioc.softioc import free_port
from epics_bridge.service.options import Options
from epics_bridge.service.shard import Shard

yaml = pytest.importorskip("yaml", reason="PyYAML comes with kubernetes-validate: pip install '.[test]'")

ROOT = Path(__file__).resolve().parents[1]
KUBE = ROOT / "kubernetes"
#: The oldest Kubernetes the manifests are checked against; the newest kubernetes-validate knows is added.
OLDEST = "1.29.0"


def documents(path: Path) -> List[Dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


KUSTOMIZATION = documents(KUBE / "kustomization.yaml")[0]
MANIFESTS = [KUBE / name for name in KUSTOMIZATION["resources"]]
RESOURCES = {(doc["kind"], doc["metadata"]["name"]): doc for path in MANIFESTS for doc in documents(path)}
STATEFULSET = RESOURCES["StatefulSet", "epics-bridge"]
POD = STATEFULSET["spec"]["template"]["spec"]
(CONTAINER,) = POD["containers"]


def test_kustomization_lists_every_manifest():
    assert sorted(MANIFESTS) == sorted(p for p in KUBE.glob("*.yaml") if p.name != "kustomization.yaml")


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_strictly(path):
    try:
        import kubernetes_validate
    except ImportError:
        pytest.skip("kubernetes-validate is not installed: pip install '.[test]'")
    for version in (OLDEST, kubernetes_validate.latest_version()):
        for doc in documents(path):
            kubernetes_validate.validate(doc, version, strict=True)  # raises, naming the field


# -- the command line, read by the launcher's parser ----------------------------------------------------
def container_args(hostname: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOSTNAME", hostname)
    return run._parser(Options()).parse_args(CONTAINER["args"])


def console_scripts() -> Dict[str, str]:
    section = (ROOT / "pyproject.toml").read_text().split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^([\w-]+)\s*=\s*"([^"]+)"', section, re.M))


def test_command_is_the_launcher():
    assert console_scripts()[CONTAINER["command"][0]] == "epics_bridge.cli:main"
    assert len(CONTAINER["command"]) == 1


def test_every_replica_runs_its_own_shard(monkeypatch):
    name, replicas = STATEFULSET["metadata"]["name"], STATEFULSET["spec"]["replicas"]
    assert [container_args(f"{name}-{i}", monkeypatch).shard for i in range(replicas)] == [
        Shard(i, replicas) for i in range(replicas)
    ]
    env = {e["name"]: e for e in CONTAINER["env"]}
    assert env["HOSTNAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", (
        "auto/N must read the pod's name, also under hostNetwork"
    )
    assert STATEFULSET["spec"]["podManagementPolicy"] == "Parallel"


def test_probes_reach_the_metrics_server(monkeypatch):
    args = container_args("epics-bridge-0", monkeypatch)
    ports = {p["name"]: p["containerPort"] for p in CONTAINER["ports"]}
    assert ports["metrics"] == args.metrics_port and args.metrics_addr == "0.0.0.0"
    probes = {kind: CONTAINER[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert {kind: (p["path"], p["port"]) for kind, p in probes.items()} == {
        "startupProbe": ("/livez", "metrics"),
        "livenessProbe": ("/livez", "metrics"),
        "readinessProbe": ("/readyz", "metrics"),
    }
    live, ready = CONTAINER["livenessProbe"], CONTAINER["readinessProbe"]
    assert live["failureThreshold"] * live["periodSeconds"] > ready["failureThreshold"] * ready["periodSeconds"]
    service = RESOURCES["Service", "epics-bridge"]["spec"]
    assert service["clusterIP"] == "None" and service["ports"][0]["targetPort"] == "metrics"
    assert STATEFULSET["spec"]["serviceName"] == "epics-bridge"


def test_stop_grace_fits_in_the_termination_grace(monkeypatch):
    assert POD["terminationGracePeriodSeconds"] > container_args("epics-bridge-0", monkeypatch).stop_grace + 5


def test_locked_down_and_every_written_path_is_a_volume(monkeypatch):
    pod, container = POD["securityContext"], CONTAINER["securityContext"]
    assert pod["runAsNonRoot"] and pod["runAsUser"] > 0 and pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["readOnlyRootFilesystem"] and container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert set(CONTAINER["resources"]) == {"requests", "limits"}
    assert all(set(CONTAINER["resources"][k]) == {"cpu", "memory"} for k in ("requests", "limits"))
    mounts = {m["mountPath"]: m for m in CONTAINER["volumeMounts"]}
    volumes = {v["name"]: v for v in POD["volumes"]}
    args = container_args("epics-bridge-0", monkeypatch)
    for writable in (str(args.log_dir), "/tmp"):  # /tmp: the workers' metrics folder
        assert "emptyDir" in volumes[mounts[writable]["name"]] and not mounts[writable].get("readOnly")
    tasks = volumes[mounts[args.paths[0]]["name"]]
    assert ("ConfigMap", tasks["configMap"]["name"]) in RESOURCES
    (pva,) = CONTAINER["envFrom"]
    assert all(key.startswith("EPICS_PVA_") for key in RESOURCES["ConfigMap", pva["configMapRef"]["name"]]["data"])


def test_example_tasks_load_and_every_replica_has_some(tmp_path):
    folder = tmp_path / "tasks"
    folder.mkdir()
    for name, source in RESOURCES["ConfigMap", "epics-bridge-tasks"]["data"].items():
        (folder / name).write_text(source)
    replicas, seen = STATEFULSET["spec"]["replicas"], []
    for index in range(replicas):
        result = subprocess.run(
            [sys.executable, "-m", "epics_bridge", str(folder), "--list", "--shard", f"{index}/{replicas}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        share = [line.split()[0] for line in result.stdout.splitlines()[1:] if not line.startswith(" ")]
        assert share, f"replica {index} would have no task: {result.stdout}"
        seen += share
    assert len(seen) == len(set(seen)) == int(result.stdout.split(" of ")[1].split()[0])


def test_probe_paths_answer_on_a_real_service(ioc, tmp_path):
    """The paths the manifests probe exist on the service's HTTP server (200 or 503, never 404)."""
    port = free_port()
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "probe.py").write_text(
        'from epics_bridge import bridge\n\n@bridge.task(prefix="KUBE:")\ndef probe(t):\n    pass\n'
    )
    paths = {CONTAINER[kind]["httpGet"]["path"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    with daemon([folder, "--metrics-port", port], ioc.client_env, tmp_path) as service:
        for path in sorted(paths):
            wait_for(
                lambda p=path: status(port, p) in (200, 503) or service.proc.poll() is not None,
                timeout=20,
                what=f"an answer on {path}",
            )
            assert service.proc.poll() is None, service.stderr[-3000:]


def status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


# -- the image ---------------------------------------------------------------------------------------------
CONTAINERFILE = (KUBE / "Containerfile").read_text()


def instructions(keyword: str) -> List[str]:
    return re.findall(rf"^{keyword}\s+(.+)$", CONTAINERFILE, re.M)


def test_containerfile_installs_the_package_and_runs_unprivileged():
    (user,) = instructions("USER")
    assert user.split(":")[0] == str(POD["securityContext"]["runAsUser"]), "numeric, as runAsNonRoot checks"
    assert any("pip install /src" in run for run in instructions("RUN"))
    for copy in instructions("COPY"):
        *sources, _ = copy.split()
        assert all((ROOT / source).exists() for source in sources), copy
    assert instructions("ENTRYPOINT") == [f'["{CONTAINER["command"][0]}"]']
    assert os.path.isdir(ROOT / "epics_bridge" / "db"), "the databases ship with the package"
