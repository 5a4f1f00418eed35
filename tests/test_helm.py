"""The Helm chart (helm/perfectqueue), without a cluster and without the helm binary.

The chart is rendered by Helm's own engine (``helm-python-sdk`` ships Helm's Go SDK as a shared
library), linted by Helm's linter, and every rendered manifest is validated against the schemas of
a current Kubernetes (``kubernetes-validate``, strict: an unknown field is an error). The settings
files the chart writes are loaded by the service's and the worker's own validators.
"""

from __future__ import annotations

import base64
import copy
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import IN_CI
from servers import service_process, write_config

from perfectqueue.service.config import load_settings
from perfectqueue.service.security import hash_key, new_key
from perfectqueue.worker.config import WorkerConfig

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "perfectqueue"
FULL_VALUES = yaml.safe_load((CHART / "ci" / "full-values.yaml").read_text())
KUBERNETES = "1.37.0"
CRD_KINDS = {"ServiceMonitor", "PodMonitor"}  # the Prometheus operator's: not in kubernetes-validate


def _need(module: str) -> Any:
    """The module, or a skip outside CI (under CI=true a missing tool is a failure)."""
    if IN_CI:
        return __import__(module)
    return pytest.importorskip(module, reason=f"{module} is not installed (pip install -e '.[test]')")


@pytest.fixture(scope="module")
def helm() -> Any:
    return _need("helm_python")


@pytest.fixture(scope="module")
def kv() -> Any:
    return _need("kubernetes_validate")


@pytest.fixture(scope="module")
def chart(helm: Any) -> Iterator[Any]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: Any, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every object the chart renders (NOTES.txt aside), each tagged with its template."""
    out = chart.render(values, name="pq", namespace="queues", is_install=True)
    docs = []
    for template, text in sorted(out.items()):
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append({**doc, "_template": template})
    return docs


def validate(kv: Any, doc: dict[str, Any]) -> None:
    """Validate one object against the Kubernetes schemas; raise on any violation."""
    manifest = {k: v for k, v in doc.items() if k != "_template"}
    kv.validate(manifest, KUBERNETES, strict=True)


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [found] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def secret_value(doc: dict[str, Any], key: str) -> str:
    return base64.b64decode(doc["data"][key]).decode()


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]
        elif doc["kind"] == "Pod":
            yield doc["metadata"]["name"], doc["spec"]


VALUES = {"default": None, "full": FULL_VALUES}


@pytest.mark.parametrize("values", VALUES, ids=list(VALUES))
def test_helm_lint_is_clean(helm: Any, values: str) -> None:
    report = helm.lint(CHART, VALUES[values], strict=True, kube_version=f"v{KUBERNETES}")
    assert report["errors"] == []
    # Severity 1 is "info" (an icon is recommended); warnings and errors fail.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("values", VALUES, ids=list(VALUES))
def test_every_manifest_is_valid_kubernetes(chart: Any, kv: Any, values: str) -> None:
    docs = render(chart, VALUES[values])
    assert docs
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        try:
            validate(kv, doc)
        except kv.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{doc['_template']}: {doc['kind']} {where}: {exc.message}")


def test_default_values_render_the_core_and_nothing_optional(chart: Any) -> None:
    kinds = sorted(d["kind"] for d in render(chart))
    assert kinds == [
        "ConfigMap",  # the settings
        "ConfigMap",  # the db-init hook's copy
        "Deployment",
        "Job",
        "Pod",  # helm test
        "PodDisruptionBudget",
        "Secret",
        "Secret",  # the db-init hook's copy
        "Service",
        "ServiceAccount",
    ]


def test_full_values_render_every_part(chart: Any) -> None:
    docs = render(chart, FULL_VALUES)
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for expected in [
        ("Deployment", "pq-perfectqueue"),
        ("Deployment", "pq-perfectqueue-worker"),
        ("HorizontalPodAutoscaler", "pq-perfectqueue"),
        ("HorizontalPodAutoscaler", "pq-perfectqueue-worker"),
        ("PodDisruptionBudget", "pq-perfectqueue"),
        ("PodDisruptionBudget", "pq-perfectqueue-worker"),
        ("Ingress", "pq-perfectqueue"),
        ("NetworkPolicy", "pq-perfectqueue"),
        ("ServiceMonitor", "pq-perfectqueue"),
        ("PodMonitor", "pq-perfectqueue-worker"),
        ("Secret", "pq-perfectqueue-worker"),
        ("Job", "pq-perfectqueue-db-init"),
        ("Pod", "pq-perfectqueue-test"),
    ]:
        assert expected in names
    # With autoscaling the HPA owns the replica count.
    assert "replicas" not in one(docs, "Deployment", "pq-perfectqueue")["spec"]


def test_the_monitors_scrape_the_service_and_the_workers(chart: Any) -> None:
    """The objects kubernetes-validate has no schema for (CRDs), checked by hand."""
    docs = render(chart, FULL_VALUES)
    assert {d["kind"] for d in docs if d["apiVersion"].startswith("monitoring.coreos.com/")} == CRD_KINDS
    [monitor] = by_kind(docs, "ServiceMonitor")
    service = one(docs, "Service", "pq-perfectqueue")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert selector.items() <= service["spec"]["selector"].items()
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in [p["name"] for p in service["spec"]["ports"]]
    assert endpoint["path"] == "/metrics"
    assert endpoint["authorization"]["credentials"] == {"name": "pq-metrics", "key": "token"}

    [pods] = by_kind(docs, "PodMonitor")
    worker = one(docs, "Deployment", "pq-perfectqueue-worker")["spec"]["template"]
    assert pods["spec"]["selector"]["matchLabels"].items() <= worker["metadata"]["labels"].items()
    [endpoint] = pods["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in [p["name"] for p in worker["spec"]["containers"][0]["ports"]]
    probe = worker["spec"]["containers"][0]["livenessProbe"]["httpGet"]
    assert (probe["path"], probe["port"]) == ("/metrics", endpoint["port"])


@pytest.mark.parametrize("values", VALUES, ids=list(VALUES))
def test_pods_run_as_non_root_on_a_read_only_filesystem(chart: Any, values: str) -> None:
    user = int(dockerfile_user())
    for name, spec in pod_specs(render(chart, VALUES[values])):
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] == user, name  # the image's USER
        assert spec["automountServiceAccountToken"] is False, name
        tmp = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts.get("/tmp") in tmp, name  # the one writable path
            assert container["resources"]["limits"]["memory"], name


def dockerfile_user() -> str:
    users = [
        line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("USER ")
    ]
    return users[-1].split(":")[0]


def test_the_service_settings_are_valid_and_shutdown_fits_the_grace(chart: Any, tmp_path: Path) -> None:
    docs = render(chart, FULL_VALUES)
    config = one(docs, "ConfigMap", "pq-perfectqueue")["data"]["perfectqueue.yml"]
    secret = one(docs, "Secret", "pq-perfectqueue")
    deployment = one(docs, "Deployment", "pq-perfectqueue")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["PERFECTQUEUE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "pq-perfectqueue", "key": "url"}

    # The service's own loader, as the pod runs it: the file, then the Secret's variables.
    path = tmp_path / Path(env["PERFECTQUEUE_CONFIG"]["value"]).name
    path.write_text(config)
    settings = load_settings(
        None,
        environ={
            "PERFECTQUEUE_CONFIG": str(path),
            "PERFECTQUEUE_URL": secret_value(secret, "url"),
            "PERFECTQUEUE_API_KEYS": secret_value(secret, "api_keys"),
        },
    )
    assert settings.host == "0.0.0.0"
    assert settings.port == container["ports"][0]["containerPort"]
    assert not settings.insecure
    assert settings.log_format == "json"
    assert [k.name for k in settings.api_keys] == ["producer", "workers", "helm-test", "sqs-orders"]
    # The SQS endpoint: on, its skew from the values, its key's secret a file of the mounted Secret.
    assert settings.sqs and settings.sqs_clock_skew == 120
    [sqs_key] = [k for k in settings.api_keys if k.access_key_id]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert sqs_key.secret_file == mounts["sqs-secrets"] + "/orders"
    assert {"name": "sqs-secrets", "secret": {"secretName": "pq-sqs-secrets"}} in pod["volumes"]
    assert set(settings.queues) == {"mails", "reports"}  # the values', and no default queue besides
    assert settings.url.startswith("mysql://")

    # SIGTERM comes after preStop; the service then needs shutdown_grace; Kubernetes waits longer.
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pre_stop + settings.shutdown_grace < pod["terminationGracePeriodSeconds"]
    # Readiness goes to 503 at SIGTERM; the probe notices before the grace is over.
    readiness = container["readinessProbe"]
    assert readiness["httpGet"]["path"] == "/readyz"
    assert readiness["periodSeconds"] * readiness["failureThreshold"] <= settings.shutdown_grace
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"

    # Every limit of "Limits" in docs/configuration.md is set, and fits the pod and its neighbours.
    assert settings.max_head_bytes <= 16 * 1024 and settings.head_timeout <= 10
    assert settings.keep_alive_timeout > 60  # an ingress's idle upstream connections: 60 s usually
    assert settings.max_long_polls < settings.max_connections <= 1000
    assert settings.statement_timeout + 1 < settings.shutdown_grace
    assert settings.max_response_bytes <= 8 * 1024 * 1024  # with a poll's data decoded: under 512Mi


def test_the_worker_settings_are_valid_and_stop_before_kubernetes_kills(chart: Any) -> None:
    docs = render(chart, FULL_VALUES)
    raw = yaml.safe_load(secret_value(one(docs, "Secret", "pq-perfectqueue-worker"), "worker.yml"))
    config = WorkerConfig.from_mapping(raw)
    assert config.backend["url"] == "http://pq-perfectqueue.queues.svc:8000"
    assert config.backend["token"] == FULL_VALUES["worker"]["token"]
    assert config.processors == 4
    assert config.metrics_port == 9100
    assert config.log_format == "json"

    pod = one(docs, "Deployment", "pq-perfectqueue-worker")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == "registry.example.com/myapp-worker:1.2.3"
    assert container["args"][:2] == ["run", "myapp.tasks:Dispatcher"]
    assert "command" not in container  # the image's entrypoint (tini) stays PID 1
    assert container["ports"] == [{"name": "metrics", "containerPort": 9100, "protocol": "TCP"}]
    assert config.child_graceful_kill_limit is not None
    assert config.child_graceful_kill_limit < pod["terminationGracePeriodSeconds"]


def test_the_database_init_job_is_a_hook_that_can_be_switched_off(chart: Any) -> None:
    hooked = render(chart, FULL_VALUES)
    job = one(hooked, "Job", "pq-perfectqueue-db-init")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["init"]
    # A hook runs before the release's objects exist: its Secret and ConfigMap are hooks too.
    for kind in ("Secret", "ConfigMap"):
        copy = one(hooked, kind, "pq-perfectqueue-db-init")
        assert copy["metadata"]["annotations"]["helm.sh/hook-weight"] == "-5"

    plain = render(chart, {**FULL_VALUES, "dbInit": {"enabled": True, "hook": False}})
    [job] = by_kind(plain, "Job")
    assert "annotations" not in job["metadata"]
    assert not [d for d in plain if d["metadata"]["name"] == "pq-perfectqueue-db-init"]
    volumes = job["spec"]["template"]["spec"]["volumes"]
    assert {"name": "config", "configMap": {"name": "pq-perfectqueue"}} in volumes

    assert by_kind(render(chart, {"dbInit": {"enabled": False}}), "Job") == []


def test_an_existing_secret_replaces_the_charts(chart: Any) -> None:
    values = {**FULL_VALUES, "existingSecret": "queue-credentials", "secretKeys": {"url": "database-url"}}
    docs = render(chart, values)
    assert [d["metadata"]["name"] for d in by_kind(docs, "Secret")] == ["pq-perfectqueue-worker"]
    for name, spec in pod_specs(docs):
        for container in spec["containers"]:
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "queue-credentials", name
    job_env = one(docs, "Job", "pq-perfectqueue-db-init")["spec"]["template"]["spec"]["containers"][0]["env"]
    [url] = [e for e in job_env if e["name"] == "PERFECTQUEUE_URL"]
    assert url["valueFrom"]["secretKeyRef"] == {"name": "queue-credentials", "key": "database-url"}


def test_the_helm_test_submits_and_reads_a_task(chart: Any, tmp_path: Path) -> None:
    """The test pod's script, run as rendered against a real service (its url and key swapped in)."""
    [pod] = by_kind(render(chart, FULL_VALUES), "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    [container] = pod["spec"]["containers"]
    assert container["command"] == ["sh", "-ec"]
    env = {e["name"]: e for e in container["env"]}
    assert env["SERVICE_URL"]["value"] == "http://pq-perfectqueue.queues.svc:8000"
    assert env["QUEUE"]["value"] == "mails"
    assert env["PERFECTQUEUE_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "test-token"

    key = new_key()
    keys = [{"name": "helm-test", "hash": hash_key(key), "scopes": ["submit", "admin"]}]
    config = write_config(tmp_path / "pq.yml", f"sqlite:///{tmp_path}/q.sqlite3", "pq_mails", api_keys=keys)
    with service_process(config, tmp_path / "service.log") as (base, _):
        result = subprocess.run(
            ["sh", "-ec", container["args"][0]],
            env={
                **os.environ,
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                "SERVICE_URL": base,
                "QUEUE": "q",
                "PERFECTQUEUE_TOKEN": key,
            },
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "submitted helm-test-1-" in result.stdout
        [task_id] = [w for w in result.stdout.split() if w.startswith("helm-test-1-")][:1]
        listed = httpx.get(
            f"{base}/v1/queues/q/tasks/{task_id}", headers={"Authorization": f"Bearer {key}"}, timeout=10
        )
        assert listed.json()["status"] == "finished"  # the test leaves nothing for a worker


def test_the_values_schema_refuses_bad_values(chart: Any, helm: Any) -> None:
    chart.validate_schema(FULL_VALUES)
    for bad in [
        {"service": {"port": "http"}},
        {"config": {"url": "mysql://root@db/q"}},  # the url is a secret: database.url
        {"apiKeys": [{"name": "k", "hash": "not-a-hash", "scopes": ["submit"]}]},
        {"serviceMonitor": {"enabeld": True}},
        {"config": {"max_head_bytes": 100}},
        {"config": {"statement_timeout": 0}},
        {"apiKeys": [{"name": "k", "access_key_id": "AKIAEXAMPLE00000001", "scopes": ["work"]}]},  # no secret
        {"apiKeys": [{"name": "k", "scopes": ["work"]}]},  # neither a hash nor an access key id
        {"sqs": {"clockSkew": 0}},
    ]:
        with pytest.raises(helm.HelmError):
            chart.validate_schema(bad)
        with pytest.raises(helm.HelmError):
            chart.render(bad, name="pq")


PASSWORD = re.compile(r"://[^/?#@:\"\s]*:[^@\"\s]*@|[?&](password|passwd)=", re.IGNORECASE)
"""A password in a database url, as SQLAlchemy reads one (``user:password@``) or as a parameter."""
QUEUE_URLS_WITH_A_PASSWORD = [
    "mysql://pq:hunter2@mariadb.databases.svc:3306/mails",
    "mysql+pymysql://pq:hun%40ter/2@db-0,db-1:3306/mails",
    "mysql://pq@mariadb:3306/mails?charset=utf8mb4&password=hunter2",
    "mysql://pq@mariadb:3306/mails?PASSWD=hunter2",
    "postgresql://pq:hunter2@postgres.databases.svc:5432/mails",
    "postgresql://pq@/mails?host=db-0:5432&host=db-1:5432&password=hunter2",
]
QUEUE_URLS_WITHOUT_ONE = [
    "mysql://pq@mariadb.databases.svc:3306/mails",
    "mysql://mariadb:3306/mails?charset=utf8mb4",
    "postgresql://pq@postgres.databases.svc:5432/mails?sslmode=require",
    "sqlite:////var/lib/perfectqueue/mails.sqlite3",
    "",
]


def with_queue_url(url: str, values: dict[str, Any] = FULL_VALUES) -> dict[str, Any]:
    values = copy.deepcopy(values)
    values["config"]["queues"]["mails"]["url"] = url
    return values


@pytest.mark.parametrize("url", QUEUE_URLS_WITH_A_PASSWORD)
def test_a_queue_url_with_a_password_is_refused_with_the_secret_way(chart: Any, helm: Any, url: str) -> None:
    with pytest.raises(helm.HelmError) as refused:
        chart.render(with_queue_url(url), name="pq")
    message = str(refused.value)
    assert "config.queues.mails.url holds a database password" in message
    assert "database.url or in your existingSecret" in message
    assert "hun" not in message  # the password is never repeated


@pytest.mark.parametrize("url", QUEUE_URLS_WITHOUT_ONE)
def test_a_queue_url_without_a_password_renders(chart: Any, url: str, tmp_path: Path) -> None:
    docs = render(chart, with_queue_url(url))
    path = tmp_path / "perfectqueue.yml"
    path.write_text(one(docs, "ConfigMap", "pq-perfectqueue")["data"]["perfectqueue.yml"])
    settings = load_settings(path, environ={"PERFECTQUEUE_URL": FULL_VALUES["database"]["url"]})
    assert settings.queue("mails").url == (url or FULL_VALUES["database"]["url"])


NO_PASSWORD_IN_A_CONFIGMAP = {
    "database.url": FULL_VALUES,
    "existingSecret": {**FULL_VALUES, "existingSecret": "queue-credentials"},
    "no hook": {**FULL_VALUES, "dbInit": {"enabled": True, "hook": False}},
    **{
        f"queue url {url!r}": with_queue_url(url)
        for url in QUEUE_URLS_WITH_A_PASSWORD + QUEUE_URLS_WITHOUT_ONE
    },
    "a section": {"config": {"production": {"url": "mysql://pq:hunter2@mariadb:3306/queues"}}},
    "another key": {"config": {"queues": {"mails": {"table": "pq_mails", "dsn": "mysql://pq:hunter2@db/q"}}}},
}


@pytest.mark.parametrize("values", NO_PASSWORD_IN_A_CONFIGMAP, ids=list(NO_PASSWORD_IN_A_CONFIGMAP))
def test_no_configmap_holds_a_password(chart: Any, helm: Any, values: str) -> None:
    """Whatever the values, a database password lands in a Secret or the rendering fails."""
    try:
        docs = render(chart, NO_PASSWORD_IN_A_CONFIGMAP[values])
    except helm.HelmError as refused:
        assert "existingSecret" in str(refused)
        return
    configmaps = by_kind(docs, "ConfigMap")
    assert configmaps
    for configmap in configmaps:
        for text in configmap["data"].values():
            assert not PASSWORD.search(text), configmap["metadata"]["name"]
            assert "hunter2" not in text and "pq:secret" not in text, configmap["metadata"]["name"]


def test_a_broken_chart_fails_these_checks(helm: Any, kv: Any, tmp_path: Path) -> None:
    """The checks above have teeth: a template error and an invalid field are both caught."""
    broken = tmp_path / "perfectqueue"
    shutil.copytree(CHART, broken)
    deployment = broken / "templates" / "deployment.yaml"
    original = deployment.read_text()

    deployment.write_text(original.replace("{{ $svc.replicaCount }}", "{{ $svc.replicaCount.nope }}"))
    with helm.Chart.load(broken) as loaded, pytest.raises(helm.HelmError):
        loaded.render(None, name="pq")

    deployment.write_text(original.replace("containerPort:", "containerPorts:"))
    with helm.Chart.load(broken) as loaded:
        [doc] = [d for d in render(loaded) if d["kind"] == "Deployment"]
    with pytest.raises(kv.ValidationError):
        validate(kv, doc)
