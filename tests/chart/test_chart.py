"""Tests of the Helm chart, its values schema, the CRD copy it ships and the examples.

Run by scripts/chart-test.sh (from `make test`) with the project venv. Helm is the Helm SDK
bundled by helm-python-sdk (no helm binary); manifests are validated offline with
kubernetes-validate; examples are validated against the CRD's schema with check-jsonschema.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

try:
    import helm_python as helm
except ImportError:  # reported by the `chart` fixture, never silently
    helm = None

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "charts" / "outbox-operator"
CRD_FILE = ROOT / "crds" / "outboxpipelines.yaml"
CHART_CRD_FILE = CHART_DIR / "crds" / "outboxpipelines.yaml"
ACCOUNT_CRD_FILE = ROOT / "crds" / "outboxaccounts.yaml"
CHART_ACCOUNT_CRD_FILE = CHART_DIR / "crds" / "outboxaccounts.yaml"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))

RELEASE = "outbox-operator"
NAMESPACE = "outbox-system"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# What a user must set: everything else has a default. No image is published, so the registry
# path of the image the user built and pushed is required too (the templates refuse it unset).
IMAGE_REPOSITORY = "registry.example.com/platform/outbox-operator"
REQUIRED = {"clusterId": "test-cluster", "aws": {"region": "eu-west-1"}, "image": {"repository": IMAGE_REPOSITORY}}

SECRET = "aws-credentials"
ROLE_ARN = "arn:aws:iam::123456789012:role/outbox-operator"

# The install matrix: each case is what a user passes on top of REQUIRED.
CASES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "localstack": {"aws": {"endpointUrl": "http://localstack:4566", "existingSecret": SECRET}},
    "irsa": {"serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": ROLE_ARN}}},
    "existing-secret": {"aws": {"existingSecret": SECRET}},
    "two-replicas": {"replicaCount": 2},
    "service-monitor": {
        "metrics": {
            "port": 9090,
            "serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "prometheus"}},
        }
    },
    "single-namespace": {"watchNamespace": "apps"},
    "no-leader-election": {"leaderElection": {"enabled": False}},
    "existing-service-account": {"serviceAccount": {"create": False, "name": "platform-outbox"}},
    "everything-set": {
        "image": {"repository": "registry.example.com/outbox-operator", "tag": "1.2.3", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "registry"}],
        "allowAdoption": True,
        "permissionsBoundaryArn": "arn:aws:iam::123456789012:policy/platform-boundary",
        "resyncPeriod": "90s",
        "concurrency": 8,
        "logFormat": "text",
        "leaderElection": {"leaseName": "outbox-leader"},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "platform", "effect": "NoSchedule"}],
        "affinity": {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "topologyKey": "topology.kubernetes.io/zone",
                            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "outbox-operator"}},
                        },
                    }
                ]
            }
        },
        "podAnnotations": {"example.com/team": "platform"},
        "podLabels": {"team": "platform"},
    },
    # What scripts/e2e-kind.sh installs: an image loaded onto the node, never pulled.
    "kind": {"image": {"repository": "outbox-operator", "tag": "e2e", "pullPolicy": "Never"}},
    "pinned-digest": {"image": {"digest": "sha256:" + "ab" * 32, "tag": "ignored"}},
    "name-override": {"nameOverride": "outbox-ctl"},
    "fullname-override": {"fullnameOverride": "platform-outbox"},
    "high-availability": {
        "replicaCount": 3,
        "priorityClassName": "platform-critical",
        "revisionHistoryLimit": 3,
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"},
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"team": "platform"}},
            },
        ],
    },
    "pdb-min-available": {"replicaCount": 2, "podDisruptionBudget": {"minAvailable": "50%"}},
    "pdb-disabled": {"replicaCount": 2, "podDisruptionBudget": {"enabled": False}},
    "extra-env": {
        "extraEnv": [
            {"name": "AWS_STS_REGIONAL_ENDPOINTS", "value": "regional"},
            {"name": "HTTPS_PROXY", "valueFrom": {"secretKeyRef": {"name": "proxy", "key": "url"}}},
        ],
        "envFrom": [
            {"configMapRef": {"name": "outbox-proxy"}},
            {"secretRef": {"name": "outbox-extra", "optional": True}},
        ],
    },
    # OpenShift's restricted-v2 SCC assigns the uid: the fixed ids are dropped with null.
    "openshift": {"podSecurityContext": {"runAsUser": None, "runAsGroup": None}},
    "network-policy": {
        "networkPolicy": {
            "enabled": True,
            "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
            "egress": [
                {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
                {"ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]},
            ],
        }
    },
    "network-policy-ingress-only": {"networkPolicy": {"enabled": True}},
    "service-annotations": {"metrics": {"service": {"annotations": {"prometheus.io/scrape": "true"}}}},
}

# Cases that replace the default security contexts on purpose (asserted in their own tests).
SECURITY_CONTEXT_OVERRIDES = {"openshift"}

PIPELINE_RULES = [
    {"apiGroups": ["outbox.dev"], "resources": ["outboxpipelines"], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": ["outbox.dev"], "resources": ["outboxpipelines/status"], "verbs": ["get", "patch"]},
    {"apiGroups": ["outbox.dev"], "resources": ["outboxpipelines/finalizers"], "verbs": ["update"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
]


# OutboxAccounts (cluster-scoped) and the namespaces their selectors read: always a ClusterRole.
ACCOUNT_RULES = [
    {"apiGroups": ["outbox.dev"], "resources": ["outboxaccounts"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["outbox.dev"], "resources": ["outboxaccounts/status"], "verbs": ["get", "patch"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]},
]
# The accounts' external ids: Secrets in the release namespace only.
SECRET_RULES = [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]


def lease_rules(name: str) -> list[dict[str, Any]]:
    return [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [name],
            "verbs": ["get", "update"],
        },
    ]


POD_SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


# ---------------------------------------------------------------------------------------------
# helpers


def require(ok: bool, what: str) -> None:
    """Skip (visibly) when a tool is missing on a developer machine; fail under CI=true."""
    if not ok:
        if IN_CI:
            pytest.fail(f"{what} (CI=true: a missing tool is a failure, not a skip)")
        pytest.skip(what)


def tool(name: str) -> str:
    """A console script of the venv running pytest, else one on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    require(found is not None, f"{name} not found: run `make venv`")
    assert found is not None
    return found


def merged(*layers: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge value layers, later ones winning (what repeated `-f` files do)."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merged(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


def values_for(case: str) -> dict[str, Any]:
    return merged(REQUIRED, CASES[case])


@pytest.fixture(scope="session")
def chart():
    require(helm is not None, "helm-python-sdk is not installed: run `make venv`")
    loaded = helm.Chart.load(str(CHART_DIR))
    yield loaded
    loaded.close()


class Rendered:
    """The parsed objects of one render, with lookups by kind."""

    def __init__(self, files: dict[str, str]):
        self.files = {name: text for name, text in files.items() if not name.endswith("NOTES.txt")}
        self.notes = next((text for name, text in files.items() if name.endswith("NOTES.txt")), "")
        self.objects = [
            doc for text in self.files.values() for doc in yaml.safe_load_all(text) if doc is not None
        ]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.of_kind(kind)
        assert len(found) == 1, f"expected one {kind}, got {len(found)}"
        return found[0]

    @property
    def deployment(self) -> dict[str, Any]:
        return self.one("Deployment")

    @property
    def pod(self) -> dict[str, Any]:
        return self.deployment["spec"]["template"]["spec"]

    @property
    def container(self) -> dict[str, Any]:
        (container,) = self.pod["containers"]
        return container

    @property
    def env(self) -> dict[str, Any]:
        """Env var name -> value, or -> valueFrom when it has one."""
        return {e["name"]: e.get("value", e.get("valueFrom")) for e in self.container["env"]}


def render(chart, values: dict[str, Any]) -> Rendered:
    return Rendered(chart.render(values, name=RELEASE, namespace=NAMESPACE))


@pytest.fixture(scope="session")
def rendered(chart):
    cache: dict[str, Rendered] = {}

    def get(case: str) -> Rendered:
        if case not in cache:
            cache[case] = render(chart, values_for(case))
        return cache[case]

    return get


def min_kube_version() -> str:
    """The floor of Chart.yaml's kubeVersion (">=1.25.0-0" -> "1.25.0")."""
    constraint = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["kubeVersion"]
    match = re.fullmatch(r">=\s*v?(\d+\.\d+\.\d+)(-0)?", constraint.strip())
    assert match, f"unexpected kubeVersion constraint {constraint!r}"
    return match.group(1)


def crd_document() -> dict[str, Any]:
    assert CRD_FILE.exists(), f"{CRD_FILE.relative_to(ROOT)} is missing: run `make crd`"
    return yaml.safe_load(CRD_FILE.read_text())


# ---------------------------------------------------------------------------------------------
# lint and offline validation


@pytest.mark.parametrize("case", CASES)
def test_chart_lints_without_warnings(case):
    require(helm is not None, "helm-python-sdk is not installed: run `make venv`")
    report = helm.lint(str(CHART_DIR), values_for(case), strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("case", CASES)
def test_every_rendered_manifest_passes_strict_offline_validation(rendered, case, tmp_path):
    validator = tool("kubernetes-validate")
    result = rendered(case)
    # No offline schema knows the ServiceMonitor CRD; its fields are asserted in their own test.
    objects = [o for o in result.objects if o["kind"] != "ServiceMonitor"]
    paths = []
    for i, obj in enumerate(objects):
        path = tmp_path / f"{i:02d}-{obj['kind'].lower()}.yaml"
        path.write_text(yaml.safe_dump(obj))
        paths.append(str(path))
    # Against the oldest Kubernetes the chart supports and the newest the validator knows.
    versions = [min_kube_version(), "1.37.0"]
    args = [arg for v in versions for arg in ("-k", v)]
    proc = subprocess.run([validator, "--strict", *args, *paths], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # kubernetes-validate only warns (exit 0) for a kind it has no schema for: demand a pass each.
    passed = [line for line in proc.stdout.splitlines() if line.startswith("INFO") and " passed " in line]
    assert len(passed) == len(objects) * len(versions), proc.stdout


def validation_rules(node: Any) -> list[dict[str, Any]]:
    """Every x-kubernetes-validations rule anywhere in a CRD schema."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        found += node.get("x-kubernetes-validations", [])
        for value in node.values():
            found += validation_rules(value)
    elif isinstance(node, list):
        for value in node:
            found += validation_rules(value)
    return found


# Rule fields and the first Kubernetes version whose API server accepts them.
RULE_FIELDS_SINCE = {"messageExpression": (1, 27), "fieldPath": (1, 28), "reason": (1, 28)}


def test_chart_kube_version_floor_is_what_the_crd_rules_need():
    # An older API server refuses the CRD the chart installs, so the chart must not claim it.
    floor = tuple(int(p) for p in min_kube_version().split(".")[:2])
    rules = validation_rules(crd_document())
    assert rules, "the CRD has no validation rules: this test would pass vacuously"
    needed = max([(1, 25)] + [since for rule in rules for key, since in RULE_FIELDS_SINCE.items() if key in rule])
    assert floor >= needed, f"Chart.yaml kubeVersion allows {floor}, the CRD's rules need {needed}"


def test_install_doc_states_the_kubernetes_floor():
    doc = (ROOT / "docs" / "install.md").read_text()
    major, minor = min_kube_version().split(".")[:2]
    assert f"Kubernetes {major}.{minor} or later" in doc


@pytest.mark.parametrize("crd_file", [CRD_FILE, ACCOUNT_CRD_FILE], ids=lambda p: p.name)
def test_crd_passes_strict_offline_validation(crd_file):
    validator = tool("kubernetes-validate")
    proc = subprocess.run([validator, "--strict", str(crd_file)], capture_output=True, text=True)
    assert proc.returncode == 0 and " passed " in proc.stdout, proc.stdout + proc.stderr


# ---------------------------------------------------------------------------------------------
# what each install renders


def test_defaults_render_the_operator_objects_and_no_service_monitor(rendered):
    kinds = sorted(o["kind"] for o in rendered("defaults").objects)
    assert kinds == sorted(
        # The second ClusterRole(Binding) and Role(Binding): OutboxAccounts and their Secrets.
        ["ClusterRole", "ClusterRoleBinding", "Deployment", "Role", "RoleBinding", "Service", "ServiceAccount"]
        + ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]
    )
    for obj in rendered("defaults").objects:
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["metadata"]


def test_defaults_set_exactly_the_operator_env_the_binary_reads(rendered, chart):
    result = rendered("defaults")
    assert result.env == {
        "AWS_REGION": "eu-west-1",
        "OUTBOX_CLUSTER_ID": "test-cluster",
        "OUTBOX_ALLOW_ADOPTION": "false",
        "OUTBOX_ALLOW_DELETE_ADOPTED_TABLES": "false",
        "OUTBOX_RESYNC_PERIOD": "5m",
        "OUTBOX_CONCURRENCY": "4",
        "OUTBOX_METRICS_PORT": "8080",
        "OUTBOX_LOG_FORMAT": "json",
        "OUTBOX_LEADER_ELECTION": "true",
        "OUTBOX_LEASE_NAME": "outbox-operator",
        "OUTBOX_LEASE_DURATION": "15s",
        "OUTBOX_RENEW_DEADLINE": "10s",
        "OUTBOX_RETRY_PERIOD": "2s",
        "POD_NAME": {"fieldRef": {"fieldPath": "metadata.name"}},
        "POD_NAMESPACE": {"fieldRef": {"fieldPath": "metadata.namespace"}},
    }
    assert result.container["args"] == ["run"]
    assert result.container["image"] == f"{IMAGE_REPOSITORY}:{chart.metadata['appVersion']}"
    assert result.container["imagePullPolicy"] == "IfNotPresent"


def test_localstack_install_points_every_aws_call_at_the_endpoint(rendered):
    env = rendered("localstack").env
    assert env["AWS_ENDPOINT_URL"] == "http://localstack:4566"
    assert env["AWS_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": SECRET, "key": "AWS_ACCESS_KEY_ID"}}


def test_existing_secret_supplies_credentials_with_optional_session_token(rendered):
    env = rendered("existing-secret").env
    assert env["AWS_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": SECRET, "key": "AWS_ACCESS_KEY_ID"}}
    assert env["AWS_SECRET_ACCESS_KEY"] == {"secretKeyRef": {"name": SECRET, "key": "AWS_SECRET_ACCESS_KEY"}}
    assert env["AWS_SESSION_TOKEN"] == {
        "secretKeyRef": {"name": SECRET, "key": "AWS_SESSION_TOKEN", "optional": True}
    }
    assert "AWS_ENDPOINT_URL" not in env


def test_irsa_annotates_the_service_account_the_pod_runs_as(rendered):
    result = rendered("irsa")
    account = result.one("ServiceAccount")
    assert account["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": ROLE_ARN}
    assert result.pod["serviceAccountName"] == account["metadata"]["name"]
    # Static keys would take precedence over the web identity in the SDK's chain.
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(result.env)


def test_existing_service_account_is_used_and_not_created(rendered):
    result = rendered("existing-service-account")
    assert result.of_kind("ServiceAccount") == []
    assert result.pod["serviceAccountName"] == "platform-outbox"
    for binding in result.of_kind("ClusterRoleBinding") + result.of_kind("RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "platform-outbox", "namespace": NAMESPACE}]


def test_two_replicas_run_with_leader_election_on_a_lease(rendered):
    result = rendered("two-replicas")
    assert result.deployment["spec"]["replicas"] == 2
    assert result.deployment["spec"]["strategy"] == {"type": "RollingUpdate"}
    assert result.env["OUTBOX_LEADER_ELECTION"] == "true"
    assert result.env["OUTBOX_LEASE_NAME"] == "outbox-operator"
    assert result.env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def test_without_leader_election_pods_never_overlap_and_no_lease_access(rendered):
    result = rendered("no-leader-election")
    assert result.deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert result.env["OUTBOX_LEADER_ELECTION"] == "false"
    assert "OUTBOX_LEASE_NAME" not in result.env
    # Only the OutboxAccounts' Secret access is left in the release namespace.
    assert [r["rules"] for r in result.of_kind("Role")] == [SECRET_RULES]
    assert len(result.of_kind("RoleBinding")) == 1


def test_every_value_reaches_the_pod(rendered):
    result = rendered("everything-set")
    case = CASES["everything-set"]
    env = result.env
    assert env["OUTBOX_ALLOW_ADOPTION"] == "true"
    assert env["OUTBOX_PERMISSIONS_BOUNDARY_ARN"] == case["permissionsBoundaryArn"]
    assert env["OUTBOX_RESYNC_PERIOD"] == "90s"
    assert env["OUTBOX_CONCURRENCY"] == "8"
    assert env["OUTBOX_LOG_FORMAT"] == "text"
    assert env["OUTBOX_LEASE_NAME"] == "outbox-leader"
    assert result.container["image"] == "registry.example.com/outbox-operator:1.2.3"
    assert result.container["imagePullPolicy"] == "Always"
    assert result.container["resources"] == case["resources"]
    assert result.pod["imagePullSecrets"] == [{"name": "registry"}]
    assert result.pod["nodeSelector"] == case["nodeSelector"]
    assert result.pod["tolerations"] == case["tolerations"]
    assert result.pod["affinity"] == case["affinity"]
    template_meta = result.deployment["spec"]["template"]["metadata"]
    assert template_meta["annotations"] == case["podAnnotations"]
    assert template_meta["labels"]["team"] == "platform"
    (lease_role,) = [r for r in result.of_kind("Role") if r["rules"] != SECRET_RULES]
    assert lease_role["rules"] == lease_rules("outbox-leader")


@pytest.mark.parametrize("case", [c for c in CASES if c not in SECURITY_CONTEXT_OVERRIDES])
def test_pod_runs_non_root_read_only_without_privileges(rendered, case):
    result = rendered(case)
    assert result.pod["securityContext"] == POD_SECURITY_CONTEXT
    assert result.container["securityContext"] == CONTAINER_SECURITY_CONTEXT
    # With a read-only root filesystem, /tmp must be a writable emptyDir.
    mounts = {m["mountPath"]: m["name"] for m in result.container["volumeMounts"]}
    volumes = {v["name"]: v for v in result.pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


@pytest.mark.parametrize("case", ["defaults", "service-monitor"])
def test_probes_and_metrics_service_use_the_operator_port(rendered, case):
    result = rendered(case)
    port = values_for(case).get("metrics", {}).get("port", 8080)
    assert result.env["OUTBOX_METRICS_PORT"] == str(port)
    assert result.container["ports"] == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
    assert result.container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert result.container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    service = result.one("Service")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": port, "targetPort": "metrics", "protocol": "TCP"}]
    pod_labels = result.deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


# ---------------------------------------------------------------------------------------------
# the image: no image is published, so a reference that cannot be pulled is refused at render


def render_error(chart, values: dict[str, Any]) -> str:
    """The message of the render failure (a `fail` in the templates) for these values."""
    with pytest.raises(helm.HelmError) as refused:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    return str(refused.value)


def test_the_old_quickstart_without_an_image_repository_is_refused_with_the_fix(chart):
    # What README's quickstart used to run: only clusterId and aws.region.
    message = render_error(chart, {"clusterId": "prod-eu-1", "aws": {"region": "eu-west-1"}})
    assert "image.repository is required" in message
    assert "Dockerfile" in message and "kind load docker-image" in message


# Docker Hub's official-image namespace, however it is spelled: nothing is published there.
OFFICIAL_IMAGE_SPELLINGS = [
    "outbox-operator",
    "library/outbox-operator",
    "docker.io/outbox-operator",
    "docker.io/library/outbox-operator",
    "index.docker.io/outbox-operator",
]


@pytest.mark.parametrize("policy", ["IfNotPresent", "Always"])
@pytest.mark.parametrize("repository", OFFICIAL_IMAGE_SPELLINGS)
def test_a_repository_without_a_registry_is_refused_unless_never_pulled(chart, repository, policy):
    values = merged(REQUIRED, {"image": {"repository": repository, "pullPolicy": policy}})
    message = render_error(chart, values)
    assert f'image.repository "{repository}" names no registry' in message
    assert "docker.io/library/outbox-operator," in message and "pullPolicy=Never" in message


def test_an_image_loaded_into_kind_is_used_as_is(rendered):
    result = rendered("kind")
    assert result.container["image"] == "outbox-operator:e2e"
    assert result.container["imagePullPolicy"] == "Never"


def test_a_registry_path_with_a_namespace_or_a_port_is_accepted(chart):
    accepted = (
        "ghcr.io/acme/outbox-operator",
        "localhost:5001/outbox-operator",
        "acme/outbox-operator",  # a Docker Hub user's namespace
        "docker.io/acme/outbox-operator",
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com/outbox-operator",
    )
    for repository in accepted:
        values = merged(REQUIRED, {"image": {"repository": repository}})
        out = Rendered(chart.render(values, name=RELEASE, namespace=NAMESPACE))
        assert out.container["image"] == f"{repository}:{chart.metadata['appVersion']}"


def test_a_digest_pins_the_image_and_wins_over_the_tag(rendered):
    assert rendered("pinned-digest").container["image"] == f"{IMAGE_REPOSITORY}@sha256:{'ab' * 32}"


# ---------------------------------------------------------------------------------------------
# names, labels and scheduling


def names_of(result: Rendered) -> dict[str, str]:
    return {
        o["kind"]: o["metadata"]["name"]
        for o in result.objects
        if o["kind"] not in ("Role", "RoleBinding") and not o["metadata"]["name"].endswith("-accounts")
    }


def test_name_override_renames_the_objects_and_the_app_label(rendered):
    result = rendered("name-override")
    names = names_of(result)
    assert names["Deployment"] == "outbox-operator-outbox-ctl"
    assert names["Service"] == "outbox-operator-outbox-ctl-metrics"
    assert result.pod["serviceAccountName"] == "outbox-operator-outbox-ctl"
    selector = result.deployment["spec"]["selector"]["matchLabels"]
    assert selector == {"app.kubernetes.io/name": "outbox-ctl", "app.kubernetes.io/instance": RELEASE}
    assert result.one("Service")["spec"]["selector"] == selector


def test_fullname_override_names_every_object(rendered):
    result = rendered("fullname-override")
    for kind, name in names_of(result).items():
        expected = "platform-outbox-metrics" if kind == "Service" else "platform-outbox"
        assert name == expected, kind
    assert result.pod["serviceAccountName"] == "platform-outbox"
    assert {r["metadata"]["name"] for r in result.of_kind("Role")} == {
        "platform-outbox-leader-election",
        "platform-outbox-account-secrets",
    }
    assert {r["metadata"]["name"] for r in result.of_kind("ClusterRole")} == {"platform-outbox", "platform-outbox-accounts"}
    # The selector keeps the chart name: only nameOverride changes it.
    assert result.deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "outbox-operator"


def test_high_availability_values_reach_the_deployment(rendered):
    result = rendered("high-availability")
    spec = result.deployment["spec"]
    assert spec["replicas"] == 3 and spec["revisionHistoryLimit"] == 3
    assert result.pod["priorityClassName"] == "platform-critical"
    zone, host = result.pod["topologySpreadConstraints"]
    # Without a labelSelector the constraint counts this release's operator pods...
    assert zone == {
        "maxSkew": 1,
        "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": spec["selector"]["matchLabels"]},
    }
    # ...and one given by the user is kept as written.
    assert host == CASES["high-availability"]["topologySpreadConstraints"][1]


def test_defaults_keep_ten_revisions_and_set_no_priority_class_or_spread(rendered):
    result = rendered("defaults")
    assert result.deployment["spec"]["revisionHistoryLimit"] == 10
    assert "priorityClassName" not in result.pod and "topologySpreadConstraints" not in result.pod


@pytest.mark.parametrize("label", ["app.kubernetes.io/name", "app.kubernetes.io/instance"])
def test_pod_labels_may_not_override_the_selector_labels(chart, label):
    message = render_error(chart, merged(REQUIRED, {"podLabels": {label: "other"}}))
    assert f"podLabels.{label}" in message and "selector" in message


def test_pod_labels_may_not_override_the_other_chart_labels(chart):
    message = render_error(chart, merged(REQUIRED, {"podLabels": {"app.kubernetes.io/version": "9"}}))
    assert "podLabels.app.kubernetes.io/version: the chart sets this label itself" in message


# ---------------------------------------------------------------------------------------------
# PodDisruptionBudget: only with more than one replica


@pytest.mark.parametrize("case", ["defaults", "kind", "no-leader-election"])
def test_no_pod_disruption_budget_for_a_single_replica(rendered, case):
    assert rendered(case).of_kind("PodDisruptionBudget") == []


def test_two_replicas_get_a_pod_disruption_budget_over_the_operator_pods(rendered):
    result = rendered("two-replicas")
    pdb = result.one("PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1" and pdb["metadata"]["namespace"] == NAMESPACE
    assert pdb["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": result.deployment["spec"]["selector"]["matchLabels"]},
    }


def test_pod_disruption_budget_min_available_replaces_max_unavailable(rendered):
    spec = rendered("pdb-min-available").one("PodDisruptionBudget")["spec"]
    assert spec["minAvailable"] == "50%" and "maxUnavailable" not in spec


def test_pod_disruption_budget_without_a_bound_is_refused(chart):
    values = merged(REQUIRED, {"replicaCount": 2, "podDisruptionBudget": {"maxUnavailable": ""}})
    assert "set maxUnavailable or minAvailable" in render_error(chart, values)


def test_pod_disruption_budget_can_be_turned_off(rendered):
    assert rendered("pdb-disabled").of_kind("PodDisruptionBudget") == []


# ---------------------------------------------------------------------------------------------
# environment


def test_extra_env_and_env_from_reach_the_container_after_the_chart_env(rendered):
    result = rendered("extra-env")
    case = CASES["extra-env"]
    env = result.container["env"]
    assert env[-2:] == case["extraEnv"]
    assert [e["name"] for e in env[:-2]] == list(rendered("defaults").env)
    assert result.container["envFrom"] == case["envFrom"]
    assert "envFrom" not in rendered("defaults").container


@pytest.mark.parametrize("name", ["OUTBOX_CLUSTER_ID", "AWS_REGION", "POD_NAMESPACE"])
def test_extra_env_may_not_shadow_what_the_chart_sets(chart, name):
    values = merged(REQUIRED, {"extraEnv": [{"name": "HTTPS_PROXY", "value": "x"}, {"name": name, "value": "x"}]})
    message = render_error(chart, values)
    assert f"extraEnv[1].name: {name} is set by the chart" in message


def test_extra_env_may_set_credentials_the_chart_does_not_set(chart):
    # Without aws.existingSecret the chart sets no AWS_ACCESS_KEY_ID: a user's own wiring is fine.
    values = merged(REQUIRED, {"extraEnv": [{"name": "AWS_ACCESS_KEY_ID", "value": "x"}]})
    env = Rendered(chart.render(values, name=RELEASE, namespace=NAMESPACE)).env
    assert env["AWS_ACCESS_KEY_ID"] == "x"
    message = render_error(chart, merged(values, {"aws": {"existingSecret": SECRET}}))
    assert "AWS_ACCESS_KEY_ID is set by the chart" in message


# ---------------------------------------------------------------------------------------------
# security contexts, NetworkPolicy, Service annotations


def test_openshift_install_drops_the_fixed_uid_and_keeps_the_restrictions(rendered):
    result = rendered("openshift")
    assert result.pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    # restricted-v2 still requires these on the container; they stay.
    assert result.container["securityContext"] == CONTAINER_SECURITY_CONTEXT
    assert "runAsUser" not in result.container["securityContext"]


def test_security_contexts_are_overridable(chart):
    values = merged(
        REQUIRED,
        {"podSecurityContext": {"runAsNonRoot": True, "fsGroup": 2000}, "securityContext": {"runAsUser": 1000}},
    )
    result = Rendered(chart.render(values, name=RELEASE, namespace=NAMESPACE))
    assert result.pod["securityContext"] == {**POD_SECURITY_CONTEXT, "fsGroup": 2000}
    assert result.container["securityContext"]["runAsUser"] == 1000


@pytest.mark.parametrize("case", ["defaults", "two-replicas", "everything-set"])
def test_no_network_policy_unless_enabled(rendered, case):
    assert rendered(case).of_kind("NetworkPolicy") == []


def test_network_policy_admits_only_the_metrics_port_from_the_given_peers(rendered):
    result = rendered("network-policy")
    policy = result.one("NetworkPolicy")
    case = CASES["network-policy"]["networkPolicy"]
    assert policy["metadata"]["namespace"] == NAMESPACE
    assert policy["spec"] == {
        "podSelector": {"matchLabels": result.deployment["spec"]["selector"]["matchLabels"]},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"ports": [{"port": 8080, "protocol": "TCP"}], "from": case["metricsFrom"]}],
        "egress": case["egress"],
    }


def test_network_policy_without_egress_rules_leaves_egress_open(rendered):
    spec = rendered("network-policy-ingress-only").one("NetworkPolicy")["spec"]
    assert spec["policyTypes"] == ["Ingress"] and "egress" not in spec
    assert spec["ingress"] == [{"ports": [{"port": 8080, "protocol": "TCP"}]}]


def test_metrics_service_annotations(rendered):
    service = rendered("service-annotations").one("Service")
    assert service["metadata"]["annotations"] == {"prometheus.io/scrape": "true"}
    assert "annotations" not in rendered("defaults").one("Service")["metadata"]


# ---------------------------------------------------------------------------------------------
# RBAC: only what the controller uses


def all_rules(result: Rendered) -> list[dict[str, Any]]:
    return [rule for kind in ("ClusterRole", "Role") for role in result.of_kind(kind) for rule in role["rules"]]


@pytest.mark.parametrize("case", CASES)
def test_rbac_grants_nothing_beyond_what_the_controller_uses(rendered, case):
    result = rendered(case)
    lease = values_for(case).get("leaderElection", {})
    expected = list(PIPELINE_RULES) + ACCOUNT_RULES + SECRET_RULES
    if lease.get("enabled", True):
        expected += lease_rules(lease.get("leaseName", "outbox-operator"))
    assert sorted(map(json.dumps, all_rules(result))) == sorted(map(json.dumps, expected))


def test_cluster_wide_install_binds_the_cluster_role_to_the_service_account(rendered):
    result = rendered("defaults")
    roles = {r["metadata"]["name"]: r for r in result.of_kind("ClusterRole")}
    role = next(r for r in roles.values() if r["rules"] == PIPELINE_RULES)
    assert [r["rules"] for r in roles.values() if r is not role] == [ACCOUNT_RULES]
    binding = next(
        b for b in result.of_kind("ClusterRoleBinding") if b["roleRef"]["name"] == role["metadata"]["name"]
    )
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    account = result.one("ServiceAccount")["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]

    (lease_role,) = [r for r in result.of_kind("Role") if r["rules"] != SECRET_RULES]
    assert lease_role["metadata"]["namespace"] == NAMESPACE
    assert lease_role["rules"] == lease_rules("outbox-operator")
    (lease_binding,) = [
        b for b in result.of_kind("RoleBinding") if b["roleRef"]["name"] == lease_role["metadata"]["name"]
    ]
    assert lease_binding["metadata"]["namespace"] == NAMESPACE
    assert lease_binding["roleRef"]["name"] == lease_role["metadata"]["name"]
    assert lease_binding["subjects"] == binding["subjects"]


def test_single_namespace_install_has_no_cluster_wide_access_beyond_outbox_accounts(rendered):
    result = rendered("single-namespace")
    # OutboxAccounts and Namespaces are cluster-scoped: reading them is the only cluster-wide grant.
    assert [r["rules"] for r in result.of_kind("ClusterRole")] == [ACCOUNT_RULES]
    assert len(result.of_kind("ClusterRoleBinding")) == 1
    assert result.env["OUTBOX_NAMESPACE"] == "apps"
    roles = {r["metadata"]["namespace"]: r for r in result.of_kind("Role") if r["rules"] != SECRET_RULES}
    assert roles["apps"]["rules"] == PIPELINE_RULES
    assert roles[NAMESPACE]["rules"] == lease_rules("outbox-operator")
    bindings = {
        b["metadata"]["namespace"]: b for b in result.of_kind("RoleBinding") if not b["roleRef"]["name"].endswith("-secrets")
    }
    assert bindings["apps"]["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": roles["apps"]["metadata"]["name"],
    }
    account = result.one("ServiceAccount")["metadata"]["name"]
    assert bindings["apps"]["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]


# ---------------------------------------------------------------------------------------------
# ServiceMonitor (no offline schema knows it: every field is asserted here)


def test_service_monitor_scrapes_the_metrics_service(rendered):
    result = rendered("service-monitor")
    monitor = result.one("ServiceMonitor")
    service = result.one("Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == NAMESPACE
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert set(monitor["spec"]) == {"namespaceSelector", "selector", "endpoints"}
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    selector = monitor["spec"]["selector"]
    assert set(selector) == {"matchLabels"}
    assert selector["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "scheme": "http", "interval": "15s"}]
    assert [p["name"] for p in service["spec"]["ports"]] == ["metrics"]


# ---------------------------------------------------------------------------------------------
# values the schema rejects (what `helm install` refuses before anything reaches the cluster)

BAD_VALUES = {
    "missing-cluster-id": ({"aws": {"region": "eu-west-1"}}, "clusterId"),
    "empty-cluster-id": ({"clusterId": "", "aws": {"region": "eu-west-1"}}, "clusterId"),
    "missing-region": ({"clusterId": "c1"}, "region"),
    "region-without-number": (merged(REQUIRED, {"aws": {"region": "eu-west"}}), "region"),
    "region-in-capitals": (merged(REQUIRED, {"aws": {"region": "EU-WEST-1"}}), "region"),
    "unknown-log-format": (merged(REQUIRED, {"logFormat": "yaml"}), "logFormat"),
    "two-replicas-without-leader-election": (
        merged(REQUIRED, {"replicaCount": 2, "leaderElection": {"enabled": False}}),
        "leaderElection",
    ),
    "unknown-top-level-key": (merged(REQUIRED, {"replicas": 2}), "replicas"),
    "misspelled-nested-key": (merged(REQUIRED, {"aws": {"regoin": "eu-west-1"}}), "regoin"),
    "zero-concurrency": (merged(REQUIRED, {"concurrency": 0}), "concurrency"),
    "concurrency-as-string": (merged(REQUIRED, {"concurrency": "4"}), "concurrency"),
    "privileged-metrics-port": (merged(REQUIRED, {"metrics": {"port": 80}}), "port"),
    "resync-period-not-a-duration": (merged(REQUIRED, {"resyncPeriod": "five minutes"}), "resyncPeriod"),
    "permissions-boundary-not-a-policy-arn": (
        merged(REQUIRED, {"permissionsBoundaryArn": "platform-boundary"}),
        "permissionsBoundaryArn",
    ),
    "endpoint-without-scheme": (merged(REQUIRED, {"aws": {"endpointUrl": "localstack:4566"}}), "endpointUrl"),
    "existing-service-account-without-name": (merged(REQUIRED, {"serviceAccount": {"create": False}}), "name"),
    "bad-pull-policy": (merged(REQUIRED, {"image": {"pullPolicy": "always"}}), "pullPolicy"),
    "digest-not-sha256": (merged(REQUIRED, {"image": {"digest": "latest"}}), "digest"),
    "tag-with-digest": (merged(REQUIRED, {"image": {"tag": "1.0@sha256:ab"}}), "tag"),
    "name-override-not-a-dns-label": (merged(REQUIRED, {"nameOverride": "Outbox_Operator"}), "nameOverride"),
    "fullname-override-not-a-dns-label": (
        merged(REQUIRED, {"fullnameOverride": "platform.outbox"}),
        "fullnameOverride",
    ),
    "negative-revision-history": (merged(REQUIRED, {"revisionHistoryLimit": -1}), "revisionHistoryLimit"),
    "priority-class-not-a-name": (merged(REQUIRED, {"priorityClassName": "High Priority"}), "priorityClassName"),
    "pdb-min-available-not-a-count": (
        merged(REQUIRED, {"podDisruptionBudget": {"minAvailable": "half"}}),
        "minAvailable",
    ),
    "pdb-misspelled-key": (merged(REQUIRED, {"podDisruptionBudget": {"maxUnavailible": 1}}), "maxUnavailible"),
    "spread-without-topology-key": (
        merged(REQUIRED, {"topologySpreadConstraints": [{"maxSkew": 1, "whenUnsatisfiable": "DoNotSchedule"}]}),
        "topologyKey",
    ),
    "extra-env-without-name": (merged(REQUIRED, {"extraEnv": [{"value": "x"}]}), "name"),
    "extra-env-as-a-map": (merged(REQUIRED, {"extraEnv": {"HTTPS_PROXY": "x"}}), "extraEnv"),
    "network-policy-misspelled-key": (merged(REQUIRED, {"networkPolicy": {"enable": True}}), "enable"),
    "security-context-not-an-object": (merged(REQUIRED, {"podSecurityContext": "restricted"}), "podSecurityContext"),
    "service-annotation-not-a-string": (
        merged(REQUIRED, {"metrics": {"service": {"annotations": {"prometheus.io/scrape": True}}}}),
        "annotations",
    ),
}


@pytest.mark.parametrize("case", BAD_VALUES)
def test_values_schema_rejects_bad_values(chart, case):
    values, named = BAD_VALUES[case]
    with pytest.raises(helm.HelmValuesError) as rejected:
        chart.validate_schema(values)
    assert named in str(rejected.value), f"the rejection should name {named!r}: {rejected.value}"
    # ...and a render (what install and template do) refuses them as well.
    with pytest.raises(helm.HelmValuesError):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


def test_values_schema_accepts_the_required_values(chart):
    chart.validate_schema(REQUIRED)  # raises if the schema rejected everything


@pytest.mark.parametrize(
    "region", ["eu-west-1", "ap-southeast-5", "cn-north-1", "us-gov-west-1", "us-isob-east-1", "eusc-de-east-1"]
)
def test_values_schema_accepts_regions_of_every_partition(chart, region):
    # Newer partitions have longer prefixes: the European Sovereign Cloud's eusc-de-east-1.
    chart.validate_schema(merged(REQUIRED, {"aws": {"region": region}}))


def test_templates_refuse_two_unleashed_replicas_even_without_the_schema(tmp_path):
    # `helm install --skip-schema-validation` must still not start two reconcilers.
    require(helm is not None, "helm-python-sdk is not installed: run `make venv`")
    unchecked = tmp_path / "outbox-operator"
    shutil.copytree(CHART_DIR, unchecked)
    (unchecked / "values.schema.json").unlink()
    values = merged(REQUIRED, {"replicaCount": 2, "leaderElection": {"enabled": False}})
    with helm.Chart.load(str(unchecked)) as chart:
        assert chart.schema is None
        with pytest.raises(helm.HelmError) as refused:
            chart.render(values, name=RELEASE, namespace=NAMESPACE)
        assert "requires leaderElection.enabled" in str(refused.value)
        chart.render(REQUIRED, name=RELEASE, namespace=NAMESPACE)  # the guard alone lets good values by


def schema_leaves(node: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted paths of the values the schema accepts that users set directly (not sub-objects)."""
    leaves: set[str] = set()
    for key, sub in node.get("properties", {}).items():
        path = f"{prefix}{key}"
        if key == "global":
            continue
        if "properties" in sub:
            leaves |= schema_leaves(sub, path + ".")
        else:
            leaves.add(path)
    return leaves


def test_every_value_has_a_default_and_a_comment_in_values_yaml():
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    lines = (CHART_DIR / "values.yaml").read_text().splitlines()
    documented: set[str] = set()
    present: set[str] = set()
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    for i, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z][A-Za-z0-9]*):", line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [key])
        stack.append((indent, key))
        present.add(path)
        if i > 0 and lines[i - 1].strip().startswith("#"):
            documented.add(path)
    leaves = schema_leaves(schema)
    assert leaves - present == set(), "values the schema accepts but values.yaml does not show"
    assert leaves - documented == set(), "values without a comment in values.yaml"


# ---------------------------------------------------------------------------------------------
# the CRD and the examples


def test_chart_crd_is_identical_to_the_generated_crd():
    crd_document()
    for chart_file, file in ((CHART_CRD_FILE, CRD_FILE), (CHART_ACCOUNT_CRD_FILE, ACCOUNT_CRD_FILE)):
        assert chart_file.exists(), f"charts/outbox-operator/crds/ has no {file.name}: run `make crd`"
        assert chart_file.read_bytes() == file.read_bytes(), f"chart {file.name} is stale: run `make crd`"


def test_helm_installs_the_outboxaccount_crd_cluster_scoped(chart):
    crds = {c["metadata"]["name"]: c for c in (yaml.safe_load(c["data"]) for c in chart.crds)}
    crd = crds["outboxaccounts.outbox.dev"]
    assert crd["spec"]["scope"] == "Cluster"
    assert crd["spec"]["names"]["kind"] == "OutboxAccount"
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    assert version["served"] and version["storage"]
    assert version["subresources"].get("status") == {}


def test_helm_installs_the_outboxpipeline_crd(chart):
    crds = [yaml.safe_load(c["data"]) for c in chart.crds]
    names = sorted(c["metadata"]["name"] for c in crds)
    assert names == ["outboxaccounts.outbox.dev", "outboxpipelines.outbox.dev"]
    (crd,) = [c for c in crds if c["metadata"]["name"] == "outboxpipelines.outbox.dev"]
    assert crd["spec"]["group"] == "outbox.dev"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["kind"] == "OutboxPipeline"
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    assert version["served"] and version["storage"]
    assert version["subresources"].get("status") == {}


def schema_file(crd: dict[str, Any], directory: Path) -> Path:
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    path = directory / f"{crd['spec']['names']['singular']}.v1alpha1.schema.json"
    # x-kubernetes-* keywords are unknown to JSON Schema and ignored by the validator.
    path.write_text(json.dumps(version["schema"]["openAPIV3Schema"]))
    return path


@pytest.fixture(scope="session")
def crd_schema_file(tmp_path_factory) -> Path:
    return schema_file(crd_document(), tmp_path_factory.mktemp("crd"))


@pytest.fixture(scope="session")
def account_schema_file(tmp_path_factory) -> Path:
    return schema_file(yaml.safe_load(ACCOUNT_CRD_FILE.read_text()), tmp_path_factory.mktemp("account-crd"))


def check_against_crd(schema: Path, document: Path) -> subprocess.CompletedProcess:
    checker = tool("check-jsonschema")
    return subprocess.run(
        [checker, "--schemafile", str(schema), str(document)], capture_output=True, text=True
    )


def test_examples_include_the_ones_the_docs_and_e2e_use():
    names = {p.name for p in EXAMPLES}
    assert {"user-created.yaml", "user-lifecycle.yaml", "cross-account.yaml"} <= names, names


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_validates_against_the_crd_schema(crd_schema_file, account_schema_file, example, tmp_path):
    docs = [d for d in yaml.safe_load_all(example.read_text()) if d]
    assert any(d["kind"] == "OutboxPipeline" for d in docs), example.name
    schemas = {"OutboxPipeline": crd_schema_file, "OutboxAccount": account_schema_file}
    for i, doc in enumerate(docs):
        assert doc["apiVersion"] == "outbox.dev/v1alpha1" and doc["kind"] in schemas, doc
        single = tmp_path / f"doc-{i}.yaml"
        single.write_text(yaml.safe_dump(doc))
        proc = check_against_crd(schemas[doc["kind"]], single)
        assert proc.returncode == 0, f"{example.name} document {i + 1}: " + proc.stdout + proc.stderr


def test_crd_schema_check_rejects_a_malformed_pipeline(crd_schema_file, tmp_path):
    # Guards the example check above against passing vacuously (e.g. an empty schema).
    doc = yaml.safe_load((ROOT / "examples" / "user-created.yaml").read_text())
    doc["spec"]["table"] = "not-an-object"
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(doc))
    proc = check_against_crd(crd_schema_file, broken)
    assert proc.returncode != 0, proc.stdout
    assert "table" in proc.stdout + proc.stderr


def test_notes_name_the_image_the_pods_pull(rendered, chart):
    image = f"{IMAGE_REPOSITORY}:{chart.metadata['appVersion']}"
    assert f"Image:        {image} (pullPolicy IfNotPresent)" in rendered("defaults").notes
    assert "Image:        outbox-operator:e2e (pullPolicy Never)" in rendered("kind").notes


def test_notes_tell_how_to_upgrade_the_crd_and_uninstall_safely(rendered):
    notes = rendered("defaults").notes
    assert "kubectl apply --server-side -f crds/outboxpipelines.yaml" in notes
    assert "delete every OutboxPipeline" in notes
