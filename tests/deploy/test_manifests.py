"""deploy/ checked without a cluster, a Docker daemon or the network: the Kubernetes
manifests against one pinned version's schemas (strict: an unknown field is an error),
the custom resources (CloudNativePG, its Barman Cloud plugin, the Gateway API, the
Prometheus Operator) against the schemas in deploy/k8s/schemas/, the compose
file against the official compose-spec schema (shipped by check-jsonschema), and, on
top, what no schema knows: the pieces name each other correctly and every setting is
one the registry reads and accepts."""

from __future__ import annotations

import base64
import copy
import json
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest

from registry import settings as registry_settings
from registry.settings import ConfigurationError, Settings
from services.server import ServerSettings
from tests.deploy.files import (
    COMPOSE_DIR,
    DEPLOY,
    DOCKERFILE,
    K8S,
    KUBERNETES_VERSION,
    ROOT,
    SCHEMAS,
    argv,
    built_here,
    command_options,
    compose,
    dockerfile,
    healthcheck_command,
    image_command,
    image_environment,
    k8s_documents,
    known_settings,
    kustomization,
    runtime_stage,
    services,
)

CRD_SCHEMAS = {
    ("postgresql.cnpg.io/v1", "Cluster"): "cnpg-cluster.schema.json",
    ("postgresql.cnpg.io/v1", "ScheduledBackup"): "cnpg-scheduledbackup.schema.json",
    ("barmancloud.cnpg.io/v1", "ObjectStore"): "barman-cloud-objectstore.schema.json",
    ("gateway.networking.k8s.io/v1", "Gateway"): "gateway-api-gateway.schema.json",
    ("gateway.networking.k8s.io/v1", "GRPCRoute"): "gateway-api-grpcroute.schema.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "prometheus-operator-podmonitor.schema.json",
}
"""Custom resources kubernetes-validate knows nothing of: each against a schema written
from its project's CRD and API reference (source and version in its description)."""
IMAGE_USER = 10001
CONNECTIONS_PER_SERVER = 2 * 8 + 16 + 8 + 1
"""A server process's most PostgreSQL connections: the event store's pool and overflow
(REGISTRY_POOL_SIZE 8 each), the query pool (REGISTRY_MAX_WORKERS 16), the read-model
engine (4 + 4) and the start-up lock's."""
CONNECTIONS_OTHER = 40
"""The worker (~25) and the jobs, with room to spare."""
BARMAN_PLUGIN = "barman-cloud.cloudnative-pg.io"
MINIMUM_POSTGRES_15_PATCH = 20
"""PostgreSQL 15.20, the newest 15 patch release these manifests were checked against
(the Debian package the test machine runs): a lower one is an old patch release (raise
this with the image)."""


def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / CRD_SCHEMAS[api_version, kind]).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def is_custom(document: dict[str, Any]) -> bool:
    return (document["apiVersion"], document["kind"]) in CRD_SCHEMAS


def cnpg_errors(document: dict[str, Any]) -> list[str]:
    """Errors of a custom resource against its schema (CRD_SCHEMAS)."""
    validator = jsonschema.Draft202012Validator(
        crd_schema(document["apiVersion"], document["kind"])
    )
    return [
        f"{'.'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def kubernetes_errors(document: dict[str, Any]) -> str | None:
    try:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return f"{'.'.join(map(str, error.path))}: {error.message}"
    return None


def compose_schema() -> dict[str, Any]:
    """The compose-spec schema as check-jsonschema vendors it (its "vendor.compose-spec")."""
    text = (
        resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    ).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def compose_errors(document: dict[str, Any]) -> list[str]:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [
        f"{'.'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def by_kind(kind: str, *, examples: bool = False) -> list[dict[str, Any]]:
    return [doc for _, doc in k8s_documents(examples=examples) if doc["kind"] == kind]


def named(kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in by_kind(kind, examples=True) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def workloads() -> list[dict[str, Any]]:
    return by_kind("Deployment") + by_kind("Job")


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


def configmap_settings() -> dict[str, str]:
    data: dict[str, str] = named("ConfigMap", "registry-config")["data"]
    return data


# ---- Kubernetes -------------------------------------------------------------------


def test_every_manifest_is_valid_kubernetes_of_the_pinned_version() -> None:
    documents = k8s_documents()
    assert {doc["kind"] for _, doc in documents} >= {
        "Namespace",
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "Job",
        "NetworkPolicy",
        "PersistentVolumeClaim",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Cluster",
        "ScheduledBackup",
        "ObjectStore",
        "Gateway",
        "GRPCRoute",
        "PodMonitor",
    }
    assert "Ingress" not in {doc["kind"] for _, doc in documents}, "ingress-nginx is retired"
    problems = []
    for path, document in k8s_documents(examples=True):
        where = f"{path.name}: {document['kind']} {document['metadata']['name']}"
        group = document["apiVersion"].rpartition("/")[0]
        builtin = "." not in group or group in ("networking.k8s.io", "rbac.authorization.k8s.io")
        assert builtin or is_custom(document), f"{where}: no schema for {document['apiVersion']}"
        if is_custom(document):
            problems += [f"{where}: {error}" for error in cnpg_errors(document)]
        else:
            error = kubernetes_errors(document)
            if error:
                problems.append(f"{where}: {error}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("version", ["1.34.0", "1.35.0", "1.36.0", "1.37.0"])
def test_every_manifest_is_valid_kubernetes_of_the_newer_versions(version: str) -> None:
    """The same strict check against each newer version the platform may run
    (the pinned KUBERNETES_VERSION above is the oldest supported)."""
    problems = []
    for path, document in k8s_documents(examples=True):
        if is_custom(document):
            continue
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{path.name}: {document['kind']}: {error.message}")
    assert not problems, "\n".join(problems)


def test_the_kubernetes_check_is_strict() -> None:
    """A misspelt field, a string for a number, a field of a newer version: refused."""
    server = named("Deployment", "registry-server")
    typo = copy.deepcopy(server)
    pod_spec(typo)["containers"][0]["readinesProbe"] = {"grpc": {"port": 50051}}
    quoted = copy.deepcopy(server)
    quoted["spec"]["replicas"] = "3"
    newer = copy.deepcopy(server)
    pod_spec(newer)["containers"][0]["readinessProbe"]["grpc"]["mode"] = "TLS"
    for document in (typo, quoted, newer):
        assert kubernetes_errors(document) is not None


def test_the_cloudnativepg_schemas_are_strict() -> None:
    cluster = named("Cluster", "registry-db")
    typo = copy.deepcopy(cluster)
    typo["spec"]["instance"] = 3
    number = copy.deepcopy(cluster)
    number["spec"]["postgresql"]["parameters"]["max_connections"] = 300  # must be "300"
    method = copy.deepcopy(cluster)
    method["spec"]["postgresql"]["synchronous"]["method"] = "all"
    two_bootstraps = copy.deepcopy(cluster)
    two_bootstraps["spec"]["bootstrap"]["recovery"] = {"source": "x"}
    cron = copy.deepcopy(named("ScheduledBackup", "registry-db-nightly"))
    cron["spec"]["schedule"] = "0 2 * * *"  # a CronJob's five fields: CNPG wants six
    no_plugin = copy.deepcopy(named("ScheduledBackup", "registry-db-nightly"))
    del no_plugin["spec"]["pluginConfiguration"]
    plugin = copy.deepcopy(cluster)
    plugin["spec"]["plugins"][0]["isWalArchiver"] = True
    store = copy.deepcopy(named("ObjectStore", "registry-db-store"))
    store["spec"]["configuration"]["serverName"] = "registry-db"  # the plugin wants it empty
    retention = copy.deepcopy(named("ObjectStore", "registry-db-store"))
    retention["spec"]["retentionPolicy"] = "30 days"
    for document in (
        typo,
        number,
        method,
        two_bootstraps,
        cron,
        no_plugin,
        plugin,
        store,
        retention,
    ):
        assert cnpg_errors(document), document["spec"]


def test_the_gateway_and_monitoring_schemas_are_strict() -> None:
    """A misspelt or misplaced field, a wrong enum, a Service backend without its port,
    an HTTPS listener without TLS, a relabeling that sets nothing: refused."""
    gateway = named("Gateway", "registry")
    assert not cnpg_errors(gateway)
    no_tls = copy.deepcopy(gateway)
    del no_tls["spec"]["listeners"][0]["tls"]
    protocol = copy.deepcopy(gateway)
    protocol["spec"]["listeners"][0]["protocol"] = "GRPC"
    route = named("GRPCRoute", "registry")
    no_port = copy.deepcopy(route)
    del no_port["spec"]["rules"][0]["backendRefs"][0]["port"]
    typo = copy.deepcopy(route)
    typo["spec"]["rules"][0]["backendRef"] = typo["spec"]["rules"][0].pop("backendRefs")
    monitor = named("PodMonitor", "registry-server")
    endpoints = copy.deepcopy(monitor)
    endpoints["spec"]["endpoints"] = endpoints["spec"].pop("podMetricsEndpoints")
    relabel = copy.deepcopy(monitor)
    del relabel["spec"]["podMetricsEndpoints"][0]["relabelings"][0]["targetLabel"]
    interval = copy.deepcopy(monitor)
    interval["spec"]["podMetricsEndpoints"][0]["interval"] = 30
    for document in (no_tls, protocol, no_port, typo, endpoints, relabel, interval):
        assert cnpg_errors(document), document["spec"]
    for (api_version, kind), name in CRD_SCHEMAS.items():
        description = crd_schema(api_version, kind)["description"]
        assert "Written for this repository from" in description, name


def test_kustomization_lists_every_manifest_but_the_examples() -> None:
    listed = kustomization()["resources"]
    assert kustomization()["namespace"] == named("Namespace", "carbon-registry")["metadata"]["name"]
    files = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    examples = {name for name in files if ".example." in name}
    assert examples == {"secrets.example.yaml", "postgres-restore.example.yaml"}
    assert sorted(listed) == sorted(files - examples)
    assert len(set(listed)) == len(listed)
    images = {image["name"] for image in kustomization()["images"]}
    used = {
        container["image"].split(":")[0]
        for workload in workloads()
        for container in pod_spec(workload)["containers"]
    }
    assert used == images == {"carbon-registry"}
    generated = {item["name"]: item for item in kustomization()["configMapGenerator"]}
    script = generated["registry-access-init-script"]
    assert script["options"]["disableNameSuffixHash"] is True  # the Job names it as it is
    assert all((K8S / path).is_file() for path in script["files"])
    mounted = {
        volume["configMap"]["name"]
        for workload in workloads()
        for volume in pod_spec(workload).get("volumes", [])
        if "configMap" in volume
    }
    assert mounted == {"registry-access-init-script"}


def test_every_secret_and_key_referenced_is_in_the_placeholders() -> None:
    """The pods, CloudNativePG and the Ingress name Secrets that secrets.example.yaml
    describes, with the same keys; and no placeholder looks like a real secret."""
    secrets = {doc["metadata"]["name"]: doc for doc in by_kind("Secret", examples=True)}
    wanted: set[tuple[str, str]] = set()
    for workload in workloads():
        spec = pod_spec(workload)
        for container in spec["containers"]:
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    wanted.add((ref["name"], ref["key"]))
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                for item in volume["secret"]["items"]:
                    wanted.add((volume["secret"]["secretName"], item["key"]))
    for cluster in by_kind("Cluster", examples=True):
        text = json.dumps(cluster)
        for found in re.finditer(r'\{"name": "([^"]+)", "key": "([^"]+)"\}', text):
            wanted.add((found.group(1), found.group(2)))
        initdb = cluster["spec"]["bootstrap"].get("initdb")
        if initdb:
            wanted |= {
                (initdb["secret"]["name"], "username"),
                (initdb["secret"]["name"], "password"),
            }
    for gateway in by_kind("Gateway"):
        wanted |= {
            (ref["name"], key)
            for listener in gateway["spec"]["listeners"]
            for ref in listener.get("tls", {}).get("certificateRefs", [])
            for key in ("tls.crt", "tls.key")
        }
    for store in by_kind("ObjectStore", examples=True):
        for ref in store["spec"]["configuration"]["s3Credentials"].values():
            wanted.add((ref["name"], ref["key"]))
    missing = {
        (name, key)
        for name, key in wanted
        if key not in secrets.get(name, {}).get("stringData", {})
    }
    assert not missing, f"referenced but not in secrets.example.yaml: {sorted(missing)}"
    for secret in secrets.values():
        for key, value in secret["stringData"].items():
            # the database URL's one secret part, its password, is the placeholder
            password = urlsplit(value).password if key == "database-url" else value
            assert key == "username" or (password or "").startswith("REPLACE-WITH-"), (
                f"{secret['metadata']['name']}.{key} must be a placeholder"
            )
    url = urlsplit(named("Secret", "registry-db-url")["stringData"]["database-url"])
    credentials = named("Secret", "registry-db-credentials")["stringData"]
    assert (url.username, url.password) == (credentials["username"], credentials["password"])
    assert named("Secret", "registry-db-credentials")["type"] == "kubernetes.io/basic-auth"
    assert named("Secret", "registry-tls")["type"] == "kubernetes.io/tls"


def test_pods_are_locked_down_and_sized() -> None:
    for workload in workloads():
        name = workload["metadata"]["name"]
        spec = pod_spec(workload)
        assert spec["enableServiceLinks"] is False, (
            f"{name}: service links would inject REGISTRY_*_SERVICE_HOST variables, "
            "which the registry would take for settings"
        )
        assert spec["automountServiceAccountToken"] is False, name
        context = spec["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] == IMAGE_USER, name
        assert context["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            resources_ = container["resources"]
            assert {"cpu", "memory"} <= set(resources_["requests"]), name
            assert "memory" in resources_["limits"], name
            mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
            assert "/tmp" in mounts, f"{name}: a writable /tmp on a read-only root"
            assert container["envFrom"] == [{"configMapRef": {"name": "registry-config"}}]
        for volume in spec.get("volumes", []):
            mode = volume.get("secret", volume.get("projected", {})).get("defaultMode", 0o644)
            if mode & 0o004 == 0:
                assert context["fsGroup"] == context["runAsGroup"] == IMAGE_USER, (
                    f"{name}: {volume['name']} is readable by its group only: set fsGroup"
                )


def test_no_secret_is_in_a_pods_environment() -> None:
    """The database URL (with its password) and every key are files mounted from
    Secrets (REGISTRY_X_FILE, or a setting naming a file): nothing secret is written
    in a pod spec's environment, where `kubectl describe` and crash dumps show it."""
    for workload in workloads():
        name = workload["metadata"]["name"]
        for container in pod_spec(workload)["containers"]:
            env = env_of(container)
            for key, item in env.items():
                assert "valueFrom" not in item, f"{name}: {key} comes from a Secret via env"
                assert not re.search(r"PASSWORD|TOKEN|SECRET", key), f"{name}: {key}"
                if re.search(r"_KEY$|_FILE$", key):
                    assert item["value"].startswith("/etc/registry/"), f"{name}: {key}"
            assert "REGISTRY_DATABASE_URL" not in env, name
            assert env["REGISTRY_DATABASE_URL_FILE"]["value"] == (
                "/etc/registry/database/database-url"
            ), name
            mounts = {m["name"]: m for m in container["volumeMounts"]}
            assert mounts["database-url"]["mountPath"] == "/etc/registry/database"
            assert mounts["database-url"]["readOnly"] is True


def test_servers_three_replicas_native_grpc_probes_spread_and_budgeted() -> None:
    server = named("Deployment", "registry-server")
    assert server["spec"]["replicas"] == 3
    spec = pod_spec(server)
    (container,) = spec["containers"]
    assert container["args"] == ["serve"]
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
    assert port == 50051 == int(configmap_settings()["REGISTRY_LISTEN"].rsplit(":", 1)[1])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": 50051}, probe
    anti = spec["affinity"]["podAntiAffinity"]
    terms = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    labels = spec_labels(server)
    assert any(
        term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
        and term["podAffinityTerm"]["labelSelector"]["matchLabels"] == labels
        for term in terms
    )
    budget = named("PodDisruptionBudget", "registry-server")
    assert budget["spec"]["selector"]["matchLabels"] == labels
    assert 1 <= budget["spec"]["minAvailable"] < server["spec"]["replicas"]
    service = named("Service", "registry")
    assert service["spec"]["selector"] == labels
    assert service["spec"]["ports"][0]["targetPort"] == "grpc"
    assert service["spec"]["ports"][0]["appProtocol"] == "kubernetes.io/h2c"
    gateway = named("Gateway", "registry")
    (listener,) = gateway["spec"]["listeners"]
    assert listener["protocol"] == "HTTPS" and listener["tls"]["mode"] == "Terminate"
    assert listener["tls"]["certificateRefs"] == [{"kind": "Secret", "name": "registry-tls"}]
    assert listener["allowedRoutes"]["kinds"] == [{"kind": "GRPCRoute"}]
    route = named("GRPCRoute", "registry")
    assert route["spec"]["parentRefs"] == [
        {"name": gateway["metadata"]["name"], "sectionName": listener["name"]}
    ]
    assert route["spec"]["hostnames"] == [listener["hostname"]]
    (rule,) = route["spec"]["rules"]
    assert "matches" not in rule, "every service of the registry goes through"
    assert rule["backendRefs"] == [
        {"name": service["metadata"]["name"], "port": service["spec"]["ports"][0]["port"]}
    ]
    policy = named("NetworkPolicy", "registry-server")
    assert policy["spec"]["podSelector"]["matchLabels"] == labels


def spec_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["selector"]["matchLabels"]
    assert workload["spec"]["template"]["metadata"]["labels"] == labels
    return labels


def test_only_the_worker_holds_the_signing_key() -> None:
    worker = named("Deployment", "registry-worker")
    assert worker["spec"]["replicas"] == 1
    assert pod_spec(worker)["containers"][0]["args"] == ["project"]
    holders = {}
    for workload in workloads():
        spec = pod_spec(workload)
        keys = {
            item["key"]
            for volume in spec.get("volumes", [])
            if "secret" in volume
            for item in volume["secret"]["items"]
        }
        holders[workload["metadata"]["name"]] = keys
        keys.discard("database-url")  # every process: test_no_secret_is_in_a_pods_environment
        ledger = env_of(spec["containers"][0]).get("REGISTRY_LEDGER_KEY")
        if keys - {"event-key"}:
            assert ledger is not None
            assert Path(ledger["value"]).name in keys, workload["metadata"]["name"]
        if "event-key" in keys:
            event_key = env_of(spec["containers"][0]).get("REGISTRY_EVENT_KEY")
            assert event_key is not None and Path(event_key["value"]).name == "event-key"
    # and every process that writes events holds the one event key (docs/security.md)
    assert holders["registry-worker"] == {"ledger-signing-key.pem", "event-key"}
    assert holders["registry-server"] == {"ledger-public-key.pem", "event-key"}
    assert holders["registry-access-init"] == {"event-key"}
    assert all(
        not keys
        for name, keys in holders.items()
        if name not in ("registry-worker", "registry-server", "registry-access-init")
    )


def test_jobs_migrate_and_initialise_and_tolerate_a_rerun() -> None:
    migrate = named("Job", "registry-migrate")
    assert pod_spec(migrate)["containers"][0]["args"] == ["migrate"]
    init = named("Job", "registry-access-init")
    (container,) = pod_spec(init)["containers"]
    script = container["args"][0]
    assert container["command"] == ["/bin/sh", "-c"]
    assert (
        'registry access init --party "$ADMIN_PARTY" --name "$ADMIN_NAME" --admin "$SECOND_ADMIN"'
    ) in script
    assert "principals exist already" in script
    # the tokens go to a Secret through the API, with a token of this Job's own
    spec = pod_spec(init)
    assert spec["serviceAccountName"] == "registry-access-init"
    assert spec["automountServiceAccountToken"] is False
    (api,) = [v for v in spec["volumes"] if v["name"] == "kubernetes-api"]
    (token,) = [
        s["serviceAccountToken"] for s in api["projected"]["sources"] if "serviceAccountToken" in s
    ]
    assert token["expirationSeconds"] <= 3600
    role = named("Role", "registry-access-init")
    assert {
        (verb, tuple(rule.get("resourceNames", ())))
        for rule in role["rules"]
        for verb in rule["verbs"]
    } == {
        ("create", ()),
        ("get", ("registry-admin-tokens",)),
        ("update", ("registry-admin-tokens",)),
    }
    assert all(rule["resources"] == ["secrets"] for rule in role["rules"])
    binding = named("RoleBinding", "registry-access-init")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": spec["serviceAccountName"]}]
    assert named("ServiceAccount", "registry-access-init")["automountServiceAccountToken"] is False
    assert all(
        "serviceAccountName" not in pod_spec(w)
        for w in workloads()
        if w["metadata"]["name"] != "registry-access-init"
    ), "only the access-init Job talks to the Kubernetes API"
    for job in (migrate, init):
        assert pod_spec(job)["restartPolicy"] == "Never"
        assert job["spec"]["backoffLimit"] >= 3  # the database may still be starting


class FakeKubernetesApi:
    """A stand-in for the Kubernetes API's Secrets endpoint, on loopback: it records
    each request and answers GET, POST and PUT with the statuses it is given."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, Any] | None, str]] = []
        self.answers = {"GET": 404, "POST": 201, "PUT": 200}
        api = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                auth = self.headers.get("Authorization", "")
                api.requests.append((self.command, self.path, body, auth))
                self.send_response(api.answers[self.command])
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST = do_PUT = answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_access_init_script_stores_the_tokens_in_a_secret_never_in_the_log(
    tmp_path: Path,
) -> None:
    """The Job's shell script, run with a stand-in `registry` that answers as the real
    one does (first run, already initialised, a real failure) and the token-storing
    script of the kustomization's ConfigMap against a stand-in Kubernetes API: the
    tokens reach the Secret registry-admin-tokens and never the log, a re-run does
    nothing, and only a Secret that cannot be written leaves them in the log (with a
    warning) rather than lose them."""
    script = pod_spec(named("Job", "registry-access-init"))["containers"][0]["args"][0]
    (store_script,) = kustomization()["configMapGenerator"][0]["files"]
    script = script.replace("/etc/registry/scripts/store-tokens.py", str(K8S / store_script))
    fake = tmp_path / "registry"
    fake.write_text('#!/bin/sh\necho "$FAKE_OUTPUT" >&2\nexit "$FAKE_STATUS"\n')
    fake.chmod(0o755)
    account = tmp_path / "account"
    account.mkdir()
    (account / "token").write_text("job-token\n")
    (account / "namespace").write_text("carbon-registry\n")
    first = (
        "mee/admin-2 (admin): token (shown once):\n0123456789abcdef.second-secret\n"
        "mee/admin (admin): token (shown once):\nfedcba9876543210.first-secret"
    )
    api = FakeKubernetesApi()

    def run(output: str, status: str) -> subprocess.CompletedProcess[str]:
        api.requests.clear()
        return subprocess.run(
            ["/bin/sh", "-c", script],
            capture_output=True,
            text=True,
            env={
                "PATH": f"{tmp_path}:{Path(sys.executable).parent}:/usr/bin:/bin",
                "ADMIN_PARTY": "mee",
                "ADMIN_NAME": "admin",
                "SECOND_ADMIN": "mee/admin-2",
                "FAKE_OUTPUT": output,
                "FAKE_STATUS": status,
                "KUBERNETES_API": api.url,
                "SERVICEACCOUNT_DIR": str(account),
            },
            check=False,
            timeout=60,
        )

    try:
        done = run(first, "0")
        assert done.returncode == 0, (done.stdout, done.stderr)
        assert "secret" not in done.stdout + done.stderr, "a token reached the log"
        assert "mee/admin (admin): token stored in Secret registry-admin-tokens" in done.stdout
        (check, post) = api.requests
        assert check[:2] == (
            "GET",
            "/api/v1/namespaces/carbon-registry/secrets/registry-admin-tokens",
        )
        assert post[0:2] == ("POST", "/api/v1/namespaces/carbon-registry/secrets")
        assert post[3] == "Bearer job-token"
        assert post[2] is not None and post[2]["metadata"]["name"] == "registry-admin-tokens"
        stored = {k: base64.b64decode(v).decode() for k, v in post[2]["data"].items()}
        assert stored == {
            "mee.admin": "fedcba9876543210.first-secret",
            "mee.admin-2": "0123456789abcdef.second-secret",
        }

        api.answers["POST"] = 409  # left from an earlier registry: replaced
        done = run(first, "0")
        assert done.returncode == 0 and [r[0] for r in api.requests] == ["GET", "POST", "PUT"]

        again = run(
            "registry access init: principals exist already; an administrator grants "
            "with 'registry access grant'",
            "2",
        )
        assert again.returncode == 0 and "nothing to do" in again.stdout
        assert [r[0] for r in api.requests] == ["GET"]

        failed = run("registry: the database is not migrated", "2")
        assert failed.returncode == 2 and "not migrated" in failed.stdout

        api.answers["PUT"] = 403
        lost = run(first, "0")
        assert lost.returncode == 1
        assert "WARNING" in lost.stderr and "first-secret" in lost.stdout

        api.answers["GET"] = 403  # no permission: stop before any token is made
        refused = run(first, "0")
        assert refused.returncode == 1 and "first-secret" not in refused.stdout
        assert [r[0] for r in api.requests] == ["GET"]
    finally:
        api.close()


def test_database_cluster_is_highly_available_and_matches_the_registry() -> None:
    cluster = named("Cluster", "registry-db")
    spec = cluster["spec"]
    assert spec["instances"] == 3
    version = spec["imageName"].rsplit(":", 1)[1]
    assert re.fullmatch(r"15\.(\d+)-standard-trixie", version), version
    assert int(version.split(".")[1].split("-")[0]) >= MINIMUM_POSTGRES_15_PATCH, version
    synchronous = spec["postgresql"]["synchronous"]
    assert 1 <= synchronous["number"] <= spec["instances"] - 1
    assert synchronous["dataDurability"] == "required"
    assert spec["affinity"]["podAntiAffinityType"] == "required"
    # Backups by the Barman Cloud plugin, not the deprecated built-in barmanObjectStore.
    assert "backup" not in spec
    (plugin,) = spec["plugins"]
    assert plugin["name"] == BARMAN_PLUGIN and plugin["isWALArchiver"] is True
    store = named("ObjectStore", plugin["parameters"]["barmanObjectName"])
    assert store["spec"]["configuration"]["destinationPath"].startswith("s3://REPLACE")
    assert store["spec"]["retentionPolicy"] == "30d"
    backup = named("ScheduledBackup", "registry-db-nightly")
    assert backup["spec"]["cluster"]["name"] == cluster["metadata"]["name"]
    assert backup["spec"]["method"] == "plugin"
    assert backup["spec"]["pluginConfiguration"] == {"name": BARMAN_PLUGIN}
    restore = named("Cluster", "registry-db-restore")
    assert restore["spec"]["imageName"] == spec["imageName"]
    source = restore["spec"]["bootstrap"]["recovery"]["source"]
    external = {c["name"]: c for c in restore["spec"]["externalClusters"]}
    archive = external[source]["plugin"]
    assert archive["name"] == BARMAN_PLUGIN
    assert archive["parameters"] == {
        "barmanObjectName": store["metadata"]["name"],
        "serverName": cluster["metadata"]["name"],
    }
    (restore_plugin,) = restore["spec"]["plugins"]
    restore_store = named("ObjectStore", restore_plugin["parameters"]["barmanObjectName"])
    assert (
        restore_store["spec"]["configuration"]["destinationPath"]
        != store["spec"]["configuration"]["destinationPath"]
    ), "a recovery must not archive into its source"
    initdb = spec["bootstrap"]["initdb"]
    url = urlsplit(named("Secret", "registry-db-url")["stringData"]["database-url"])
    assert (url.hostname, url.port, url.path) == (
        f"{cluster['metadata']['name']}-rw",
        5432,
        f"/{initdb['database']}",
    )
    assert url.username == initdb["owner"]
    replicas = named("Deployment", "registry-server")["spec"]["replicas"] + 1  # + surge
    settings = configmap_settings()
    per_server = (
        2 * int(settings["REGISTRY_POOL_SIZE"]) + int(settings["REGISTRY_MAX_WORKERS"]) + 8 + 1
    )
    assert per_server == CONNECTIONS_PER_SERVER
    needed = replicas * per_server + CONNECTIONS_OTHER
    assert int(spec["postgresql"]["parameters"]["max_connections"]) >= needed


def _gigabytes(size: str) -> float:
    """A PostgreSQL or Kubernetes size ("8GB", "20Gi", "512MB") in GiB."""
    found = re.fullmatch(r"(\d+)\s*([GM])i?B?", size)
    assert found is not None, size
    number, unit = found.groups()
    return int(number) / (1024 if unit == "M" else 1)


def test_both_deployments_space_checkpoints_for_the_national_year() -> None:
    """PostgreSQL's default ``max_wal_size`` (1GB) made the bench's 10x year
    checkpoint 41 times in 12 minutes, and after each checkpoint the first change to
    every index page writes the whole page to the WAL: 15 GB for the 10x trades against
    6 GB at 8GB (docs/operations.md, "What each scale needs"). Both deployments set the
    same spacing, and the Kubernetes WAL volume holds it twice over."""
    spec = named("Cluster", "registry-db")["spec"]
    parameters = spec["postgresql"]["parameters"]
    primary = command_options(services()["postgres"])
    for name in ("max_wal_size", "checkpoint_timeout"):
        assert parameters[name] == primary[name], name
    assert _gigabytes(parameters["max_wal_size"]) >= 8
    assert _gigabytes(spec["walStorage"]["size"]) >= 2 * _gigabytes(parameters["max_wal_size"])


NOT_IN_CONFIGMAP = {
    "REGISTRY_CONFIG_FILE": "the ConfigMap is the configuration",
    "REGISTRY_DATABASE_URL": "secret: a file of the registry-db-url Secret, per container",
    "REGISTRY_READ_DATABASE_URL": "secret, optional: commented in server-deployment.yaml",
    "REGISTRY_DATA_DIR": "the image sets it (/var/lib/registry)",
    "REGISTRY_REUSE_PORT": "set by the server for its own processes",
    "REGISTRY_CREDENTIALS_FILE": "the embedded first start only; access-init stores a Secret",
    "REGISTRY_TLS_CERT": "TLS ends at the Gateway (docs/operations.md, TLS)",
    "REGISTRY_TLS_KEY": "TLS ends at the Gateway",
    "REGISTRY_TLS_CLIENT_CA": "TLS ends at the Gateway",
    "REGISTRY_LEDGER_KEY": "per container: the worker's private key, the servers' public one",
    "REGISTRY_LEDGER_PUBLIC_KEY": "`registry verify` run by hand",
    "REGISTRY_EVENT_KEY": "per container: a file of the registry-event-key Secret",
    "REGISTRY_LEDGER_CHECKPOINTS": "the worker's only: its persistent volume",
    "REGISTRY_SERVER": "the CLI's",
    "REGISTRY_TOKEN": "the CLI's",
    "REGISTRY_TLS_CA": "the CLI's",
    "REGISTRY_CLIENT_CERT": "the CLI's",
    "REGISTRY_CLIENT_KEY": "the CLI's",
}
"""Settings of registry/settings.py the ConfigMap leaves out, and why: any other one is
missing from it (a new setting must be decided on here)."""


def test_configmap_has_every_setting_but_those_left_out_for_a_reason() -> None:
    settings = configmap_settings()
    every = {setting.name for setting in registry_settings.SETTINGS}
    assert set(NOT_IN_CONFIGMAP) <= every, set(NOT_IN_CONFIGMAP) - every
    missing = every - set(settings) - set(NOT_IN_CONFIGMAP)
    assert not missing, f"not in configmap.yaml nor NOT_IN_CONFIGMAP: {sorted(missing)}"
    assert not set(settings) & set(NOT_IN_CONFIGMAP)
    for setting in registry_settings.SETTINGS:
        default = setting.default
        if setting.name in settings and default.isdigit():
            assert int(settings[setting.name]) >= 1, setting.name


ASSIGNED = re.compile(
    r"^\s*-\s+name:\s+(REGISTRY_[A-Z0-9_]*[A-Z0-9])\s*$"  # a container's env
    r"|(?:^\s*|^\s*ENV\s+|^\s*export\s+|\s)(REGISTRY_[A-Z0-9_]*[A-Z0-9])(?:\s*:\s|\s*:$|=)",
    re.MULTILINE,
)
"""A REGISTRY_* name being set: an env entry, a YAML key, an ENV or shell assignment
(not one being read, such as make-secrets.sh's ${REGISTRY_TLS_NAMES:-})."""


def test_every_registry_variable_set_in_deploy_is_a_known_setting() -> None:
    """Every REGISTRY_* name deploy/ sets (a ConfigMap key, a container's env, the
    compose environment, the Dockerfile's ENV, a script's assignment) is one the
    registry accepts (registry.settings.check refuses any other at start)."""
    found: dict[str, set[str]] = {}
    for path in DEPLOY.rglob("*"):
        if path.is_file() and path.suffix in (".yaml", ".sh", "") and "schemas" not in path.parts:
            for pair in ASSIGNED.findall(path.read_text(errors="replace")):
                name = pair[0] or pair[1]
                found.setdefault(name, set()).add(str(path.relative_to(DEPLOY)))
    assert {"REGISTRY_DATABASE_URL_FILE", "REGISTRY_LEDGER_CHECKPOINTS", "REGISTRY_LISTEN"} <= set(
        found
    )
    unknown = {name: where for name, where in found.items() if not registry_settings.is_known(name)}
    assert not unknown, unknown


def test_worker_publishes_checkpoints_on_a_persistent_writable_volume() -> None:
    worker = named("Deployment", "registry-worker")
    spec = pod_spec(worker)
    (container,) = spec["containers"]
    path = Path(env_of(container)["REGISTRY_LEDGER_CHECKPOINTS"]["value"])
    (mount,) = [m for m in container["volumeMounts"] if path.is_relative_to(m["mountPath"])]
    assert not mount.get("readOnly", False)
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    claim = named("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert worker["spec"]["strategy"] == {"type": "Recreate"}, (
        "a ReadWriteOnce volume: the old worker must let go before the new one starts"
    )


def test_configmap_settings_are_known_and_accepted_by_the_server() -> None:
    settings = configmap_settings()
    assert all(registry_settings.is_known(name) for name in settings), settings
    env = {
        **settings,
        "REGISTRY_DATABASE_URL": "postgresql://u:p@registry-db-rw:5432/registry",
        "REGISTRY_LEDGER_KEY": "/etc/registry/ledger/ledger-public-key.pem",
    }
    server = ServerSettings.from_env(Settings.from_env(env), env)
    assert server.listen == "0.0.0.0:50051" and not server.projections_in_process
    assert server.four_eyes
    for workload in workloads():
        for name in env_of(pod_spec(workload)["containers"][0]):
            assert not name.startswith("REGISTRY_") or registry_settings.is_known(name), name


# ---- the image ----------------------------------------------------------------------


def test_dockerfile_builds_a_wheel_and_runs_it_as_non_root() -> None:
    stages = {i.arguments for i in dockerfile() if i.keyword == "FROM"}
    assert stages == {"${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE} AS runtime"}
    assert any(
        i.keyword == "ARG" and i.arguments.startswith("PYTHON_IMAGE=python:3.11.")
        for i in dockerfile()
    )
    builder = [i for i in dockerfile() if i.stage == "builder"]
    assert any(i.keyword == "RUN" and "pip wheel" in i.arguments for i in builder)
    runtime = runtime_stage()
    installs = [i.arguments for i in runtime if i.keyword == "RUN" and "pip install" in i.arguments]
    assert len(installs) == 1 and "--no-index" in installs[0] and "from=builder" in installs[0]
    assert not any(i.keyword in ("COPY", "ADD") for i in runtime), "the runtime gets wheels only"
    (user,) = [i.arguments for i in runtime if i.keyword == "USER"]
    assert user == f"{IMAGE_USER}:{IMAGE_USER}"
    assert image_command("ENTRYPOINT") == ["registry"]
    assert image_command("CMD") == ["serve"]
    assert image_environment()["REGISTRY_LISTEN"] == "0.0.0.0:50051"
    assert healthcheck_command()[:2] == ["registry", "health"]
    assert (
        set(image_environment()) & {n for n in image_environment() if n.startswith("REGISTRY_")}
        <= known_settings()
    )


def test_the_health_command_is_a_cli_subcommand() -> None:
    """`registry health` as the image's HEALTHCHECK runs it (registry/cli/app.py registers
    registry.cli.health.add_parser)."""
    import argparse

    from registry.cli import health as health_cli

    parser = argparse.ArgumentParser(prog="registry")
    health_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(healthcheck_command()[1:])
    assert args.run is health_cli.run and args.timeout == 3.0 and args.server is None
    assert health_cli.default_server({"REGISTRY_LISTEN": "0.0.0.0:50051"}) == "127.0.0.1:50051"
    assert parser.parse_args(["health", "--worker"]).worker == "ready"
    assert parser.parse_args(["health", "--worker", "live"]).worker == "live"


def test_worker_probes_are_http_on_its_metrics_port() -> None:
    """The worker serves no gRPC: its probes are /healthz (live) and /readyz (ready) on
    the metrics port (registry.observability.worker)."""
    (container,) = pod_spec(named("Deployment", "registry-worker"))["containers"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"metrics": 9464}
    paths = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for probe, path in paths.items():
        assert container[probe]["httpGet"] == {"path": path, "port": "metrics"}, probe


def test_registry_cli_offers_the_health_command(capsys: pytest.CaptureFixture[str]) -> None:
    """The image's HEALTHCHECK runs `registry health`: registry/cli/app.py must register
    it with `health.add_parser(sub)`."""
    from registry import cli

    with pytest.raises(SystemExit) as exited:
        cli.main(["health", "--help"])
    assert exited.value.code == 0, (
        "`registry health` is not a command: add `health.add_parser(sub)` to "
        f"registry/cli/app.py build_parser() (and import health)\n{capsys.readouterr().err}"
    )


def test_dockerignore_keeps_the_build_context_to_the_wheels_sources() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    let_in = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for instruction in dockerfile():
        if instruction.keyword == "COPY" and not instruction.arguments.startswith("--"):
            copied |= {word.rstrip("/") for word in instruction.arguments.split()[:-1]}
    assert copied == let_in
    assert all((ROOT / path).exists() for path in copied)


# ---- compose ------------------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_spec() -> None:
    assert not compose_errors(compose()), compose_errors(compose())
    typo = copy.deepcopy(compose())
    typo["services"]["worker"]["comand"] = ["project"]
    assert compose_errors(typo)
    condition = copy.deepcopy(compose())
    condition["services"]["worker"]["depends_on"]["migrate"]["condition"] = "done"
    assert compose_errors(condition)


def test_compose_services_roles_and_order() -> None:
    all_services = services()
    roles: dict[str, list[str]] = {}
    for name, service in all_services.items():
        assert "image" in service or "build" in service, name
        if built_here(service):
            assert service["image"] == all_services["migrate"]["image"], name
            roles.setdefault(argv(service)[2], []).append(name)
    assert roles == {
        "migrate": ["migrate"],
        "access": ["access-init"],
        "serve": ["registry-1", "registry-2"],
        "project": ["worker"],
    }
    assert argv(all_services["access-init"])[2:] == [
        "access",
        "init",
        "--party",
        "mee",
        "--name",
        "admin",
        "--admin",
        "mee/admin-2",
    ]
    for name, service in all_services.items():
        for target, needs in service.get("depends_on", {}).items():
            assert target in all_services, f"{name} depends on unknown {target}"
            condition = needs["condition"]
            if condition == "service_completed_successfully":
                assert all_services[target]["restart"] == "no", target
            elif condition == "service_healthy":
                assert has_healthcheck(all_services[target]), target
            else:
                pytest.fail(f"{name} -> {target}: wait for health or completion, not {condition}")
    order = {name: set(service.get("depends_on", {})) for name, service in all_services.items()}
    assert order["migrate"] == {"postgres"}
    assert order["access-init"] == {"migrate"}
    assert order["postgres-replica"] == {"postgres"}
    servers_wait_for = {"migrate", "access-init", "postgres-replica"}
    assert order["registry-1"] == order["registry-2"] == servers_wait_for
    assert order["worker"] == {"migrate"}
    assert order["lb"] == {"registry-1", "registry-2"}
    for name in ("migrate", "access-init"):
        assert all_services[name]["healthcheck"] == {"disable": True}, (
            f"{name} runs no server: the image's gRPC health check does not apply"
        )
    # the worker serves no gRPC: its health is its /readyz (registry health --worker)
    worker_check = all_services["worker"]["healthcheck"]
    assert worker_check["test"][:4] == ["CMD", "registry", "health", "--worker"]
    assert all_services["worker"]["environment"]["REGISTRY_METRICS_PORT"] == "9464"


def has_healthcheck(service: dict[str, Any]) -> bool:
    check = service.get("healthcheck")
    if check is not None:
        return not check.get("disable", False) and bool(check.get("test"))
    return built_here(service)  # the image's HEALTHCHECK


def test_compose_declares_what_services_use_and_keeps_secrets_out() -> None:
    document = compose()
    for name, service in services().items():
        for kind in ("secrets", "configs", "networks"):
            for entry in service.get(kind, []):
                source = entry["source"] if isinstance(entry, dict) else entry
                assert source in document[kind], f"{name}: {kind} {source} is not declared"
        for volume in service.get("volumes", []):
            named_volume = volume.split(":", 1)[0]
            assert named_volume.startswith((".", "/")) or named_volume in document["volumes"]
        for key, value in service.get("environment", {}).items():
            value = str(value)
            if re.search(r"PASSWORD|TOKEN|SECRET|_KEY\b", key):
                assert value.startswith("/run/secrets/"), f"{name}: {key} must name a file"
            if key.startswith("REGISTRY_"):
                assert key in known_settings(), f"{name}: {key} is no registry setting"
            if value.startswith("/run/secrets/"):
                mounted = value.removeprefix("/run/secrets/")
                assert mounted in service["secrets"], f"{name}: {key} names {value}"
    for config in document["configs"].values():
        assert (COMPOSE_DIR / config["file"]).is_file()
    for secret in document["secrets"].values():
        assert secret["file"].startswith("./secrets/"), "secret files live in secrets/"
    ignored = [
        line
        for line in (COMPOSE_DIR / "secrets" / ".gitignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert ignored == ["*", "!.gitignore"], "secrets/ must never be committed"


def test_make_secrets_writes_every_secret_file_compose_reads(tmp_path: Path) -> None:
    made = subprocess.run(
        ["sh", str(COMPOSE_DIR / "make-secrets.sh"), str(tmp_path / "s")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    for secret in compose()["secrets"].values():
        path = tmp_path / "s" / secret["file"].removeprefix("./secrets/")
        assert path.is_file() and path.stat().st_size > 0, path
        assert path.stat().st_mode & 0o044, f"{path}: the container's user must read it"
    assert (tmp_path / "s").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "s" / "tls" / "ca.key").stat().st_mode & 0o777 == 0o600
    again = subprocess.run(
        ["sh", str(COMPOSE_DIR / "make-secrets.sh"), str(tmp_path / "s")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert again.returncode == 0 and again.stdout.count("keeping") == 6, again.stdout


def test_plaintext_servers_are_reachable_only_inside_the_compose_network() -> None:
    document = compose()
    for name, service in services().items():
        environment = service.get("environment", {})
        if environment.get("REGISTRY_PLAINTEXT") == "allow":
            assert "ports" not in service, f"{name} would publish a plaintext port"
            for network in service["networks"]:
                assert document["networks"][network].get("internal") is True, (name, network)
    published = [name for name, service in services().items() if "ports" in service]
    assert published == ["lb"]


def test_compose_server_settings_are_accepted_by_the_server() -> None:
    for name in ("registry-1", "registry-2"):
        env = {
            k: str(v)
            for k, v in services()[name]["environment"].items()
            if k.startswith("REGISTRY_")
        }
        env = {
            **image_environment(),
            **env,
            "REGISTRY_DATABASE_URL": "postgresql://registry:x@postgres:5432/registry",
        }
        server = ServerSettings.from_env(Settings.from_env(env), env)
        assert server.listen == "0.0.0.0:50051" and not server.projections_in_process
        del env["REGISTRY_PLAINTEXT"]
        with pytest.raises(ConfigurationError):
            ServerSettings.from_env(Settings.from_env(env), env)


def test_load_balancer_sends_grpc_to_both_servers() -> None:
    config = (COMPOSE_DIR / "nginx.conf").read_text()
    upstreams = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", config, re.MULTILINE)
    servers = sorted(
        name
        for name, service in services().items()
        if built_here(service) and argv(service)[2] == "serve"
    )
    assert sorted(host for host, _ in upstreams) == servers
    assert {port for _, port in upstreams} == {"50051"}
    assert re.search(r"grpc_pass\s+grpc://registry_servers;", config)
    assert re.search(r"client_max_body_size\s+32m;", config)
    lb = services()["lb"]
    mounted = {entry["target"] for entry in lb["configs"]}
    assert "/etc/nginx/nginx.conf" in mounted
    for secret in lb["secrets"]:
        assert f"/run/secrets/{secret}" in config


def test_dockerfile_is_where_compose_builds_it() -> None:
    for name, service in services().items():
        if built_here(service):
            context = (COMPOSE_DIR / service["build"]["context"]).resolve()
            assert context == ROOT, name
            assert (context / service["build"]["dockerfile"]).resolve() == DOCKERFILE


# ---- network policies, monitoring, images ---------------------------------------------

MONITORING = (
    ("kubernetes.io/metadata.name", "monitoring"),
    ("app.kubernetes.io/name", "prometheus"),
)
"""Prometheus: pods labelled app.kubernetes.io/name=prometheus in the namespace named
"monitoring" (networkpolicy.yaml, docs/operations.md "Network policies")."""
GATEWAY = (("kubernetes.io/metadata.name", "gateway-system"),)
SAME_NAMESPACE = ()


def peer(rule_peer: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """A NetworkPolicy peer as the labels it requires (namespace's, then pod's)."""
    assert "ipBlock" not in rule_peer, "no address ranges: peers are named by labels"
    labels: list[tuple[str, str]] = []
    for key in ("namespaceSelector", "podSelector"):
        selector = rule_peer.get(key)
        if selector is not None:
            assert set(selector) <= {"matchLabels"}, selector
            labels += sorted(selector.get("matchLabels", {}).items())
    return tuple(labels)


def reachable() -> dict[str, set[tuple[int, tuple[tuple[str, str], ...]]]]:
    """component -> every (port, peer) a NetworkPolicy lets in (an Ingress policy with
    no rules lets nothing in)."""
    allowed: dict[str, set[tuple[int, tuple[tuple[str, str], ...]]]] = {}
    for policy in by_kind("NetworkPolicy"):
        spec = policy["spec"]
        assert spec["policyTypes"] == ["Ingress"]
        selector = spec["podSelector"]
        if "matchLabels" in selector:
            components = [selector["matchLabels"]["app.kubernetes.io/component"]]
        else:
            (expression,) = selector["matchExpressions"]
            assert expression["operator"] == "In"
            components = expression["values"]
        for component in components:
            into = allowed.setdefault(component, set())
            for rule in spec.get("ingress", []):
                assert rule.get("from") and rule.get("ports"), "a rule names peers and ports"
                for port in rule["ports"]:
                    assert port["protocol"] == "TCP" and isinstance(port["port"], int)
                    into |= {(port["port"], peer(p)) for p in rule["from"]}
    return allowed


def test_network_policies_let_prometheus_scrape_and_nothing_else_in() -> None:
    """The metrics port (9464) of the servers and the worker is reachable from
    Prometheus in the monitoring namespace and from nowhere else; the gRPC port only
    from the Gateway's namespace and this namespace; the jobs from nowhere."""
    metrics = int(configmap_settings()["REGISTRY_METRICS_PORT"])
    assert reachable() == {
        "server": {(50051, GATEWAY), (50051, SAME_NAMESPACE), (metrics, MONITORING)},
        "worker": {(metrics, MONITORING)},
        "migration": set(),
        "access-init": set(),
    }
    for name in ("registry-server", "registry-worker"):
        (container,) = pod_spec(named("Deployment", name))["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == metrics, name
    # every pod of ours is selected by a policy (no pod left open by default)
    components = {
        w["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        for w in workloads()
    }
    assert components == set(reachable())


def test_pod_monitors_scrape_every_metrics_port_under_the_alerts_job_names() -> None:
    monitors = {m["metadata"]["name"]: m for m in by_kind("PodMonitor")}
    assert set(monitors) == {"registry-server", "registry-worker", "registry-db"}
    for name in ("registry-server", "registry-worker"):
        deployment = named("Deployment", name)
        monitor = monitors[name]["spec"]
        assert monitor["selector"]["matchLabels"] == spec_labels(deployment)
        (endpoint,) = monitor["podMetricsEndpoints"]
        (container,) = pod_spec(deployment)["containers"]
        assert endpoint["port"] in {p["name"] for p in container["ports"]}
        assert endpoint["path"] == "/metrics"
        assert endpoint["relabelings"] == [{"targetLabel": "job", "replacement": name}]
    database = monitors["registry-db"]["spec"]
    assert database["selector"]["matchLabels"] == {"cnpg.io/cluster": "registry-db"}
    assert "monitoring" not in named("Cluster", "registry-db")["spec"], (
        "CloudNativePG's enablePodMonitor is deprecated: our PodMonitor instead"
    )
    alerts = (DEPLOY / "prometheus" / "alerts.yaml").read_text()
    for name in monitors:
        assert f'job="{name}"' in alerts, f"no alert for a missing {name} target"


V_TAGGED = frozenset({"prom/prometheus"})
"""Images whose release tags start with a "v" (prom/prometheus:v3.5.0)."""
IMAGE_TAG = re.compile(
    r"^(?P<name>[^@\s]+):(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]*)(@sha256:[0-9a-f]{64})?$"
)


def image_references() -> dict[str, str]:
    """Every image deploy/ runs that it does not build: where -> reference."""
    found = {}
    syntax = DOCKERFILE.read_text().splitlines()[0]
    assert syntax.startswith("# syntax=")
    found["Dockerfile syntax"] = syntax.removeprefix("# syntax=")
    for instruction in dockerfile():
        if instruction.keyword == "ARG" and instruction.arguments.startswith("PYTHON_IMAGE="):
            found["Dockerfile PYTHON_IMAGE"] = instruction.arguments.partition("=")[2]
    for name, service in services().items():
        if not built_here(service):
            found[f"compose {name}"] = service["image"]
    for _, document in k8s_documents(examples=True):
        if document["kind"] == "Cluster":
            found[f"Cluster {document['metadata']['name']}"] = document["spec"]["imageName"]
    return found


def test_every_image_is_pinned_to_an_exact_release() -> None:
    """No floating tag (latest, a major, "15"): each image is an exact release (its
    patch where the image publishes one: python 3.11.16, PostgreSQL 15.20, whose
    versions have two parts; the Dockerfile frontend's 1.18 line), and a digest, where
    one is given, is well formed. Digests are added at release (docs/operations.md,
    "Pinning images"): this machine cannot reach the registries to resolve them."""
    references = image_references()
    assert len(references) >= 5, references
    for where, reference in references.items():
        found = IMAGE_TAG.match(reference)
        assert found, f"{where}: {reference} has no exact tag"
        tag = found.group("tag")
        if found.group("name") in V_TAGGED:
            tag = tag.removeprefix("v")
        assert re.match(r"^\d+\.\d+(\.\d+)?(-[a-z0-9.-]+)?$", tag), f"{where}: {reference}"
        if where.startswith("Dockerfile PYTHON") or re.search("nginx|prometheus", reference):
            assert re.match(r"^\d+\.\d+\.\d+", tag), f"{where}: {reference} needs its patch"
