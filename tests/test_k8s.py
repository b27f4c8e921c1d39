"""The Kubernetes manifests deploy each region as a fenced cell and the router in front.

infra/k8s/ holds a kustomize base for the router and one for a cell, and one
overlay per deployment: `router` and one per region. These tests render every
overlay with `kubectl kustomize` (skipped where kubectl is absent) and check
the rendered objects, as the API server would receive them, for what the
residency invariants of ARCHITECTURE.md need from a deployment: each cell runs
in its own namespace with its own region setting, stores and Secrets; the only
way into a cell is the router; no NetworkPolicy lets one region reach another
region's namespace or stores; no secret value is committed; and the router
lists every region's in-cluster URL.

Regions are read from the overlay directories (every one but `router`), so a
region added by copying an overlay is checked at once.
"""

import functools
import ipaddress
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

Doc = dict[str, Any]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

OVERLAYS = Path(__file__).resolve().parents[1] / "infra" / "k8s" / "overlays"
ROUTER = "router"
CELL_REGIONS = sorted(p.name for p in OVERLAYS.glob("*/") if p.is_dir() and p.name != ROUTER)
ALL_OVERLAYS = [ROUTER, *CELL_REGIONS]
REGION_PAIRS = [(a, b) for a in CELL_REGIONS for b in CELL_REGIONS if a != b]
KUBECTL = shutil.which("kubectl")

# Addresses only reachable inside a cluster or a private network: pods, services, other regions'
# stores, cloud metadata. Public egress must exclude all of them.
PRIVATE_RANGES = [ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16", "127.0.0.0/8",
    "fc00::/7", "fe80::/10", "::1/128",
)]
# Names of variables that hold credentials; they must come from a Secret.
SECRET_LIKE = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL", re.IGNORECASE)
# `scheme://user:password@host`: the password part.
URL_PASSWORD = re.compile(r"://[^/@\s:]*:([^@/\s]+)@")
VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
SECRET_MARK = "<secret {}/{}>"

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed, so the kustomize overlays "
                                                         "cannot be rendered")


# ------------------------------------------------------------------ rendering


@functools.cache
def render(overlay: str) -> tuple[Doc, ...]:
    """The objects `kubectl kustomize` renders for one overlay, rendered once per run."""
    assert KUBECTL is not None
    result = subprocess.run([KUBECTL, "kustomize", str(OVERLAYS / overlay)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, f"kubectl kustomize {overlay} failed:\n{result.stderr}"
    docs = tuple(d for d in yaml.safe_load_all(result.stdout) if d)
    assert docs, f"overlay {overlay} renders nothing"
    return docs


def of_kind(overlay: str, kind: str) -> list[Doc]:
    return [d for d in render(overlay) if d["kind"] == kind]


def one(overlay: str, kind: str, name: str) -> Doc:
    """The object of that kind and name, failing with what is missing rather than an IndexError."""
    found = [d for d in of_kind(overlay, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"overlay {overlay} renders {len(found)} {kind} named {name!r}, expected one"
    return found[0]


def namespace(overlay: str) -> Doc:
    """The overlay's Namespace, with the name label the API server adds to every namespace."""
    found = of_kind(overlay, "Namespace")
    assert len(found) == 1, f"overlay {overlay} should render exactly one Namespace"
    ns = found[0]
    labels = {**ns["metadata"].get("labels", {}), "kubernetes.io/metadata.name": ns["metadata"]["name"]}
    return {**ns, "metadata": {**ns["metadata"], "labels": labels}}


def namespace_labels(overlay: str) -> dict[str, str]:
    labels: dict[str, str] = namespace(overlay)["metadata"]["labels"]
    return labels


def workloads(overlay: str) -> list[Doc]:
    """Every Deployment and Job."""
    return of_kind(overlay, "Deployment") + of_kind(overlay, "Job")


def by_component(overlay: str, kind: str, component: str) -> Doc:
    found = [d for d in of_kind(overlay, kind)
             if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == component]
    assert len(found) == 1, f"overlay {overlay} should render one {kind} for component {component!r}"
    return found[0]


def pod_labels(workload: Doc) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def containers(workload: Doc) -> list[Doc]:
    pod = workload["spec"]["template"]["spec"]
    result: list[Doc] = pod.get("initContainers", []) + pod["containers"]
    return result


def only_container(workload: Doc) -> Doc:
    found = workload["spec"]["template"]["spec"]["containers"]
    assert len(found) == 1, f"{workload['metadata']['name']} should run one container"
    container: Doc = found[0]
    return container


def env(overlay: str, container: Doc) -> dict[str, str]:
    """A container's environment as the kubelet builds it: envFrom ConfigMaps first, then `env` in order,
    `$(VAR)` expanded from what is defined before; a Secret's value shows as `<secret name/key>`."""
    result: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert "configMapRef" in source, f"{container['name']}: envFrom only from ConfigMaps, secrets by key"
        result.update(one(overlay, "ConfigMap", source["configMapRef"]["name"]).get("data", {}))
    for entry in container.get("env", []):
        if "value" in entry:
            result[entry["name"]] = VAR_REF.sub(lambda m: result.get(m.group(1), m.group(0)), entry["value"])
            continue
        ref = entry.get("valueFrom", {})
        if "secretKeyRef" in ref:
            result[entry["name"]] = SECRET_MARK.format(ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"])
        elif "configMapKeyRef" in ref:
            key = ref["configMapKeyRef"]
            result[entry["name"]] = one(overlay, "ConfigMap", key["name"])["data"][key["key"]]
    return result


def secret_refs(container: Doc) -> dict[str, Doc]:
    """Variable name -> its secretKeyRef."""
    return {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})}


# ------------------------------------------------------------ network policies


def selects(selector: Doc | None, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels and matchExpressions) matches these labels; {} matches all."""
    if selector is None:
        return True
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def rules(overlay: str, labels: dict[str, str], direction: str) -> list[Doc]:
    """The ingress or egress rules of every policy in the overlay that selects pods with these labels."""
    key = "ingress" if direction == "Ingress" else "egress"
    found: list[Doc] = []
    for policy in of_kind(overlay, "NetworkPolicy"):
        spec = policy["spec"]
        if direction in spec.get("policyTypes", ["Ingress"]) and selects(spec["podSelector"], labels):
            found.extend(spec.get(key) or [])
    return found


def peers(rule: Doc, direction: str) -> list[Doc]:
    """A rule's peers; a rule without any allows every source or destination, which no rule here may do."""
    found: list[Doc] = rule.get("from" if direction == "Ingress" else "to") or []
    assert found, f"an {direction.lower()} rule with no peers allows all addresses: {rule}"
    return found


def within(net: Network, outer: Network) -> bool:
    """Whether every address of `net` is in `outer` (never across IP versions)."""
    if isinstance(net, ipaddress.IPv4Network) and isinstance(outer, ipaddress.IPv4Network):
        return net.subnet_of(outer)
    if isinstance(net, ipaddress.IPv6Network) and isinstance(outer, ipaddress.IPv6Network):
        return net.subnet_of(outer)
    return False


def overlaps(a: list[Network], b: list[Network]) -> bool:
    return any(x.version == y.version and x.overlaps(y) for x in a for y in b)


def networks(ip_block: Doc) -> list[Network]:
    """The addresses an ipBlock really allows: its CIDR minus its exceptions."""
    allowed: list[Network] = [ipaddress.ip_network(ip_block["cidr"])]
    for text in ip_block.get("except", []):
        hole = ipaddress.ip_network(text)
        kept: list[Network] = []
        for net in allowed:
            if not overlaps([net], [hole]):
                kept.append(net)
            elif not within(net, hole):
                # `hole` overlaps `net` without covering it, so it is a subnet of the same version.
                kept.extend(net.address_exclude(hole))  # type: ignore[arg-type]
        allowed = kept
    return allowed


def private_ip_blocks(overlay: str) -> list[Network]:
    """The address blocks inside private ranges that an overlay's policies allow: its stores. A broad
    block that also covers private addresses (a public range with a missing exception) is not among them."""
    found: list[Network] = []
    for policy in of_kind(overlay, "NetworkPolicy"):
        for rule in policy["spec"].get("egress") or []:
            for peer in rule.get("to") or []:
                if "ipBlock" in peer:
                    found.extend(n for n in networks(peer["ipBlock"])
                                 if any(within(n, private) for private in PRIVATE_RANGES))
    return found


def is_dns(peer: Doc, rule: Doc) -> bool:
    """The cluster DNS: kube-dns pods in kube-system, port 53 only."""
    ns = peer.get("namespaceSelector")
    return (ns is not None and selects(ns, {"kubernetes.io/metadata.name": "kube-system"})
            and ns.get("matchLabels", {}).get("kubernetes.io/metadata.name") == "kube-system"
            and (peer.get("podSelector") or {}).get("matchLabels", {}).get("k8s-app") == "kube-dns"
            and {p["port"] for p in rule.get("ports", [])} == {53})


def ports(rule: Doc) -> set[int]:
    assert rule.get("ports"), f"a rule without ports allows every port: {rule}"
    return {p["port"] for p in rule["ports"]}


def strings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every string in a document with its path."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from strings(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from strings(v, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


# --------------------------------------------------------------------- layout


def test_router_and_both_regions_have_overlays() -> None:
    assert (OVERLAYS / ROUTER).is_dir(), "infra/k8s/overlays/router is missing"
    assert {"us-west", "eu-west"} <= set(CELL_REGIONS), f"cell overlays found: {CELL_REGIONS}"


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_overlay_renders_into_its_own_namespace(overlay: str) -> None:
    ns = namespace(overlay)
    name = ns["metadata"]["name"]
    labels = ns["metadata"]["labels"]
    if overlay == ROUTER:
        assert name == "relay-router"
        assert labels.get("relay.dev/role") == "router"
    else:
        assert name == f"relay-{overlay}"
        assert labels.get("relay.dev/role") == "cell"
        assert labels.get("relay.dev/region") == overlay
    for doc in render(overlay):
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == name, f"{doc['kind']}/{doc['metadata']['name']} not in {name}"


# ---------------------------------------------------------------- workloads


@pytest.mark.parametrize("region", CELL_REGIONS)
def test_cell_runs_api_and_worker_for_its_region(region: str) -> None:
    for component, args in (("api", ["cell"]), ("worker", ["worker"])):
        deployment = by_component(region, "Deployment", component)
        assert deployment["metadata"]["namespace"] == f"relay-{region}"
        container = only_container(deployment)
        assert container["args"][: len(args)] == args
        settings = env(region, container)
        assert settings.get("RELAY_REGION") == region, f"{component} in {region} runs as {settings.get('RELAY_REGION')}"
        if "--region" in container["args"]:
            assert container["args"][container["args"].index("--region") + 1] == region
        for name in ("RELAY_DATABASE_URL", "RELAY_REDIS_URL", "RELAY_OBJECT_STORE", "RELAY_HOP_SECRET",
                     "RELAY_SECRET_KEY", "RELAY_REGIONS"):
            assert settings.get(name), f"{component} in {region} has no {name}"
        assert settings["RELAY_OBJECT_STORE"].startswith("s3://")
        assert region in settings["RELAY_OBJECT_STORE"], "each region writes to its own bucket"


@pytest.mark.parametrize("region", CELL_REGIONS)
def test_api_and_worker_share_the_region_stores(region: str) -> None:
    api = env(region, only_container(by_component(region, "Deployment", "api")))
    worker = env(region, only_container(by_component(region, "Deployment", "worker")))
    for name in ("RELAY_REGION", "RELAY_DATABASE_URL", "RELAY_REDIS_URL", "RELAY_OBJECT_STORE", "RELAY_HOP_SECRET",
                 "RELAY_SECRET_KEY", "AWS_REGION", "AWS_ENDPOINT_URL", "PGPASSWORD"):
        assert api.get(name) == worker.get(name), f"{region}: api and worker disagree on {name}"


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_every_container_has_requests_and_limits(overlay: str) -> None:
    found = workloads(overlay)
    assert found
    for workload in found:
        for container in containers(workload):
            resources = container.get("resources", {})
            where = f"{overlay}: {workload['metadata']['name']}/{container['name']}"
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), f"{where} has no cpu/memory request"
            assert "memory" in resources.get("limits", {}), f"{where} has no memory limit"


def _http_probe_port(container: Doc, probe: Doc) -> int:
    port = probe["httpGet"]["port"]
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    assert port in named, f"probe port {port!r} is not a named port of {container['name']}"
    number: int = named[port]
    return number


HTTP_SERVERS = [(region, "api") for region in CELL_REGIONS] + [(ROUTER, "router")]


@pytest.mark.parametrize(("overlay", "component"), HTTP_SERVERS)
def test_http_servers_are_probed_and_served(overlay: str, component: str) -> None:
    deployment = by_component(overlay, "Deployment", component)
    container = only_container(deployment)
    readiness, liveness = container.get("readinessProbe"), container.get("livenessProbe")
    assert readiness and liveness, f"{overlay} {component} lacks a readiness or liveness probe"
    assert readiness["httpGet"]["path"] == "/readyz"
    assert liveness["httpGet"]["path"] == "/healthz"
    assert _http_probe_port(container, readiness) == _http_probe_port(container, liveness) == 8000
    assert env(overlay, container).get("RELAY_PORT") == "8000"
    assert env(overlay, container).get("RELAY_HOST") == "0.0.0.0"
    services = [s for s in of_kind(overlay, "Service") if selects({"matchLabels": s["spec"]["selector"]},
                                                                   pod_labels(deployment))]
    assert len(services) == 1, f"{overlay} {component} should be behind one Service"
    service_port = services[0]["spec"]["ports"][0]
    target = service_port["targetPort"]
    assert target == 8000 or (target == "http" and _http_probe_port(container, readiness) == 8000)
    for other in of_kind(overlay, "Deployment"):
        if other is not deployment:
            assert not selects({"matchLabels": services[0]["spec"]["selector"]}, pod_labels(other)), \
                f"Service {services[0]['metadata']['name']} also selects {other['metadata']['name']}"


def autoscaler(overlay: str, deployment: str) -> Doc:
    """The one autoscaler of a Deployment: an HPA, or a KEDA ScaledObject (KEDA runs the HPA it describes),
    as {minReplicas, maxReplicas, metrics/triggers}."""
    hpas = [h["spec"] for h in of_kind(overlay, "HorizontalPodAutoscaler")
            if h["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment}]
    scaled = [{"minReplicas": o["spec"]["minReplicaCount"], "maxReplicas": o["spec"]["maxReplicaCount"],
               "metrics": o["spec"]["triggers"]} for o in of_kind(overlay, "ScaledObject")
              if o["spec"]["scaleTargetRef"]["name"] == deployment
              and o["spec"]["scaleTargetRef"].get("kind", "Deployment") == "Deployment"]
    assert len(hpas) + len(scaled) == 1, f"{overlay}: Deployment {deployment} should have one autoscaler"
    return (hpas + scaled)[0]


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_every_deployment_has_an_autoscaler_and_a_pdb(overlay: str) -> None:
    deployments = of_kind(overlay, "Deployment")
    assert deployments
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        spec = autoscaler(overlay, name)
        assert spec["minReplicas"] >= 2, f"{overlay}: {name} should keep two replicas for availability"
        assert spec["maxReplicas"] > spec["minReplicas"]
        assert spec.get("metrics"), f"{overlay}: the autoscaler of {name} scales on nothing"
        pdbs = [p for p in of_kind(overlay, "PodDisruptionBudget")
                if selects(p["spec"]["selector"], pod_labels(deployment))]
        assert len(pdbs) == 1, f"{overlay}: Deployment {name} should have one PDB"
        budget = pdbs[0]["spec"]
        # A budget that never allows an eviction blocks node drains.
        assert budget.get("maxUnavailable", 0) >= 1 or budget.get("minAvailable", spec["minReplicas"]) < \
            spec["minReplicas"], f"{overlay}: PDB of {name} allows no eviction"


@pytest.mark.parametrize("region", CELL_REGIONS)
def test_the_worker_scales_on_its_queue_and_the_api_on_in_flight_requests(region: str) -> None:
    """CPU lags a backlog (a worker waiting on a slow webhook is busy without CPU): the worker follows the
    depth of the region's own queue, the list saq keeps in the region's Redis (cell.worker names the queue
    `relay-<region>`), and the API the requests the routers have in flight to this region."""
    worker = {t["type"]: t["metadata"] for t in autoscaler(region, "cell-worker")["metrics"]}
    assert worker["redis"]["listName"] == f"saq:relay-{region}:queued"
    assert f"relay-{region}." in worker["redis"]["address"], "the worker scales on another region's Redis"
    container = only_container(by_component(region, "Deployment", "worker"))
    assert worker["redis"]["passwordFromEnv"] in env(region, container)
    assert "cpu" in worker
    api = {t["type"]: t["metadata"] for t in autoscaler(region, "cell-api")["metrics"]}
    assert api["prometheus"]["query"] == f'sum(relay_router_cell_in_flight{{relay_region="{region}"}})'
    assert "cpu" in api


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_migration_job_uses_the_service_database(overlay: str) -> None:
    target, server = ("router", "router") if overlay == ROUTER else ("cell", "api")
    job = by_component(overlay, "Job", "migrate")
    container = only_container(job)
    assert container["args"] == ["db", "migrate", "--target", target]
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")
    migrate_env = env(overlay, container)
    server_env = env(overlay, only_container(by_component(overlay, "Deployment", server)))
    for name in ("RELAY_DATABASE_URL", "PGPASSWORD"):
        assert migrate_env.get(name) == server_env.get(name), f"{overlay}: migration and {server} differ on {name}"


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_pods_run_locked_down(overlay: str) -> None:
    for workload in workloads(overlay):
        pod = workload["spec"]["template"]["spec"]
        name = workload["metadata"]["name"]
        assert pod.get("securityContext", {}).get("runAsNonRoot") is True, f"{overlay}: {name} may run as root"
        assert pod.get("automountServiceAccountToken") is False, f"{overlay}: {name} mounts an API token"
        for container in containers(workload):
            sc = container.get("securityContext", {})
            where = f"{overlay}: {name}/{container['name']}"
            assert sc.get("readOnlyRootFilesystem") is True, f"{where} has a writable root filesystem"
            assert sc.get("allowPrivilegeEscalation") is False, f"{where} allows privilege escalation"
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{where} keeps capabilities"
            image: str = container["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), f"{where}: unpinned {image}"


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_env_references_are_defined_before_use(overlay: str) -> None:
    """Kubernetes leaves an undefined `$(VAR)` as literal text, which would ship as, say, a hop secret."""
    for workload in workloads(overlay):
        for container in containers(workload):
            defined: set[str] = set()
            for source in container.get("envFrom", []):
                defined |= set(one(overlay, "ConfigMap", source["configMapRef"]["name"]).get("data", {}))
            for entry in container.get("env", []):
                for ref in VAR_REF.findall(entry.get("value", "")):
                    assert ref in defined, f"{overlay}: {container['name']} {entry['name']} uses $({ref}) undefined"
                defined.add(entry["name"])


# ------------------------------------------------------------------- secrets


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_no_secret_value_is_committed(overlay: str) -> None:
    for secret in of_kind(overlay, "Secret"):
        annotations = secret["metadata"].get("annotations", {})
        values = {**secret.get("data", {}), **secret.get("stringData", {})}
        assert annotations.get("relay.dev/placeholder") == "true" and all(v in ("", "PLACEHOLDER") for v in
                                                                        values.values()), \
            f"{overlay}: Secret {secret['metadata']['name']} commits values"
    for config in of_kind(overlay, "ConfigMap"):
        for key, value in config.get("data", {}).items():
            assert not SECRET_LIKE.search(key), f"{overlay}: secret-looking {key} in ConfigMap"
            assert not URL_PASSWORD.search(value), f"{overlay}: ConfigMap {key} carries a password in a URL"
    checked = 0
    for workload in workloads(overlay):
        for container in containers(workload):
            refs = secret_refs(container)
            for entry in container.get("env", []):
                where = f"{overlay}: {container['name']} {entry['name']}"
                if SECRET_LIKE.search(entry["name"]):
                    assert entry["name"] in refs and "value" not in entry, f"{where} is not read from a Secret"
                    checked += 1
                for password in URL_PASSWORD.findall(entry.get("value", "")):
                    match = VAR_REF.fullmatch(password)
                    assert match and match.group(1) in refs, f"{where} carries a literal password"
    assert checked, f"{overlay}: no secret is read at all"


@pytest.mark.parametrize("region", CELL_REGIONS)
def test_each_region_reads_its_own_secrets(region: str) -> None:
    names = {ref["name"] for w in workloads(region) for c in containers(w) for ref in secret_refs(c).values()}
    assert names, f"{region} reads no Secret"
    for name in names:
        assert region in name, f"{region} reads Secret {name!r}, not one named for the region"


# ------------------------------------------------------------------ isolation


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_namespace_denies_by_default(overlay: str) -> None:
    deny = [p for p in of_kind(overlay, "NetworkPolicy") if p["spec"]["podSelector"] == {}
            and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    assert deny, f"{overlay} has no default-deny NetworkPolicy"


def api_ingress_blocks(region: str) -> list[Network]:
    """The addresses a region's API admits by block: the router cluster's egress addresses (one cluster per
    region)."""
    api = by_component(region, "Deployment", "api")
    return [n for rule in rules(region, pod_labels(api), "Ingress") for peer in peers(rule, "Ingress")
            if "ipBlock" in peer for n in networks(peer["ipBlock"])]


def hop_egress_blocks() -> list[Network]:
    """Where the router's pods may call on the hop port outside its cluster: the cells' load balancers."""
    router_pods = pod_labels(by_component(ROUTER, "Deployment", "router"))
    return [n for rule in rules(ROUTER, router_pods, "Egress") if ports(rule) == {8000}
            for peer in peers(rule, "Egress") if "ipBlock" in peer for n in networks(peer["ipBlock"])]


@pytest.mark.parametrize("region", CELL_REGIONS)
def test_only_the_router_reaches_the_cell_api(region: str) -> None:
    router_ns = namespace_labels(ROUTER)
    router_pods = pod_labels(by_component(ROUTER, "Deployment", "router"))
    api = by_component(region, "Deployment", "api")
    ingress = rules(region, pod_labels(api), "Ingress")
    assert ingress, f"nothing may reach the {region} API, not even the router"
    for rule in ingress:
        assert ports(rule) == {8000}
        for peer in peers(rule, "Ingress"):
            if "ipBlock" in peer:  # the router cluster (test_the_router_cluster_alone_reaches_a_cell_from_outside)
                assert set(peer) == {"ipBlock"}, f"{region} API peer mixes an address block with selectors: {peer}"
                continue
            assert "namespaceSelector" in peer, f"{region} API admits pods of its own namespace: {peer}"
            assert selects(peer["namespaceSelector"], router_ns), f"{region} API peer misses the router namespace"
            assert "podSelector" in peer and selects(peer["podSelector"], router_pods), \
                f"{region} API peer does not name the router's pods: {peer}"
            for cell in CELL_REGIONS:
                assert not selects(peer["namespaceSelector"], namespace_labels(cell)), \
                    f"{region} API admits the {cell} namespace"
    for workload in workloads(region):
        if workload is not api:
            assert not rules(region, pod_labels(workload), "Ingress"), \
                f"{region}: {workload['metadata']['name']} accepts connections"


def test_the_router_cluster_alone_reaches_a_cell_from_outside() -> None:
    """One cluster per region: the router's cluster reaches each region's API through an internal load balancer
    that keeps the caller's address, and the API admits that cluster's egress addresses, the same in every
    region (one value, components/router-cluster), private, and no region's stores or load balancers."""
    admitted = {region: sorted(str(n) for n in api_ingress_blocks(region)) for region in CELL_REGIONS}
    first = admitted[CELL_REGIONS[0]]
    assert first, "no region admits the router cluster's addresses"
    assert all(blocks == first for blocks in admitted.values()), f"regions admit different routers: {admitted}"
    router_cluster = [ipaddress.ip_network(b) for b in first]
    assert all(any(within(n, private) for private in PRIVATE_RANGES) for n in router_cluster), \
        f"a cell API admits public addresses: {first}"
    for region in CELL_REGIONS:
        assert not overlaps(router_cluster, private_ip_blocks(region)), f"{region}'s stores could call its API"
        service = one(region, "Service", "cell-api")
        annotations = service["metadata"].get("annotations", {})
        assert service["spec"].get("type") == "LoadBalancer", f"{region}: cell-api is not reachable across clusters"
        assert annotations.get("service.beta.kubernetes.io/aws-load-balancer-scheme") == "internal", \
            f"{region}: the hop's load balancer must never face the internet"
        # The policy sees the router's addresses only if the load balancer passes them on.
        assert "preserve_client_ip.enabled=true" in annotations.get(
            "service.beta.kubernetes.io/aws-load-balancer-target-group-attributes", "")
        assert service["spec"].get("externalTrafficPolicy") == "Local"
    hop = hop_egress_blocks()
    assert len(hop) >= len(CELL_REGIONS), f"the router reaches {len(hop)} load balancers, not one a region"
    assert not overlaps(hop, router_cluster), "the router's hop egress covers its own cluster"
    for i, a in enumerate(hop):
        assert not overlaps([a], hop[i + 1:]), f"two regions' load balancer blocks overlap at {a}"
    for region in CELL_REGIONS:
        assert not overlaps(hop, private_ip_blocks(region)), f"the router's hop egress reaches {region}'s stores"


@pytest.mark.parametrize(("region", "other"), REGION_PAIRS)
def test_no_egress_from_one_region_to_another(region: str, other: str) -> None:
    other_ns = namespace_labels(other)
    other_stores = private_ip_blocks(other)
    assert other_stores, f"{other} lists no store addresses"
    policies = of_kind(region, "NetworkPolicy")
    assert policies
    for policy in policies:
        for rule in policy["spec"].get("egress") or []:
            for peer in peers(rule, "Egress"):
                where = f"{region} NetworkPolicy {policy['metadata']['name']}"
                if "namespaceSelector" in peer:
                    assert not selects(peer["namespaceSelector"], other_ns), f"{where} reaches namespace of {other}"
                if "ipBlock" in peer:
                    assert not overlaps(networks(peer["ipBlock"]), other_stores), f"{where} reaches {other}'s stores"


@pytest.mark.parametrize(("region", "other"), REGION_PAIRS)
def test_no_other_region_is_named_in_a_cell(region: str, other: str) -> None:
    """A copied overlay that still points at the region it was copied from fails here."""
    for doc in render(region):
        for path, value in strings(doc):
            if doc["kind"] == "ConfigMap" and path == ".data.RELAY_REGIONS":
                continue
            assert other not in value, f"{region}: {doc['kind']}/{doc['metadata']['name']}{path} names {other}"


@pytest.mark.parametrize("region", CELL_REGIONS)
def test_api_egress_is_dns_and_own_stores_only(region: str) -> None:
    own_stores = private_ip_blocks(region)
    egress = rules(region, pod_labels(by_component(region, "Deployment", "api")), "Egress")
    assert any(is_dns(peer, rule) for rule in egress for peer in peers(rule, "Egress")), "API cannot resolve names"
    assert sum(1 for rule in egress for peer in peers(rule, "Egress") if "ipBlock" in peer) >= 3, \
        f"{region} API should reach its Postgres, Redis and object store"
    for rule in egress:
        for peer in peers(rule, "Egress"):
            if is_dns(peer, rule):
                continue
            assert set(peer) == {"ipBlock"}, f"{region} API reaches more than its stores: {peer}"
            allowed = networks(peer["ipBlock"])
            assert all(any(within(n, store) for store in own_stores) and overlaps([n], PRIVATE_RANGES)
                       for n in allowed), f"{region} API reaches the internet"
            assert ports(rule) <= {5432, 6379, 443}


@pytest.mark.parametrize("region", CELL_REGIONS)
def test_worker_reaches_public_configured_ports_but_no_private_address(region: str) -> None:
    own_stores = private_ip_blocks(region)
    worker = by_component(region, "Deployment", "worker")
    # The ports the app may call (it refuses any other when a destination is set) are those the network
    # opens: a webhook on a port the policy drops would be accepted by the API and lost at delivery.
    configured = set(json.loads(env(region, only_container(worker))["RELAY_EGRESS_PORTS"]))
    assert {443, 587} <= configured, f"{region}: HTTPS and SMTP submission must be reachable"
    egress = rules(region, pod_labels(worker), "Egress")
    public = 0
    for rule in egress:
        for peer in peers(rule, "Egress"):
            if is_dns(peer, rule):
                continue
            assert set(peer) == {"ipBlock"}, f"{region} worker reaches pods: {peer}"
            allowed = networks(peer["ipBlock"])
            private = [n for n in allowed if overlaps([n], PRIVATE_RANGES)]
            assert all(any(within(n, store) for store in own_stores)
                       for n in private), f"{region} worker reaches private addresses beyond its stores: {peer}"
            if len(private) < len(allowed):
                assert ports(rule) == configured, \
                    f"{region} worker reaches the internet on ports {ports(rule)}, the app calls {configured}"
                public += 1
    assert public, f"{region} worker cannot reach webhook or integration hosts"


def test_router_reaches_cell_apis_only() -> None:
    router_pods = pod_labels(by_component(ROUTER, "Deployment", "router"))
    egress = rules(ROUTER, router_pods, "Egress")
    cell_stores = [n for region in CELL_REGIONS for n in private_ip_blocks(region)]
    reached = set()
    for rule in egress:
        for peer in peers(rule, "Egress"):
            if is_dns(peer, rule):
                continue
            if "ipBlock" in peer:
                assert not overlaps(networks(peer["ipBlock"]), cell_stores), "the router reaches a cell's stores"
                assert overlaps(networks(peer["ipBlock"]), PRIVATE_RANGES)
                continue
            assert "namespaceSelector" in peer, f"router egress to its own namespace: {peer}"
            for region in CELL_REGIONS:
                if not selects(peer["namespaceSelector"], namespace_labels(region)):
                    continue
                reached.add(region)
                assert ports(rule) == {8000}
                for workload in workloads(region):
                    component = pod_labels(workload)["app.kubernetes.io/component"]
                    assert selects(peer.get("podSelector"), pod_labels(workload)) == (component == "api"), \
                        f"router egress to {region} {component} pods"
    assert reached == set(CELL_REGIONS), f"the router can reach only {sorted(reached)}"


# --------------------------------------------------------------------- router


def test_router_lists_every_cell() -> None:
    container = only_container(by_component(ROUTER, "Deployment", "router"))
    raw = next((e["value"] for e in container.get("env", []) if e["name"] == "RELAY_CELLS"), None)
    assert raw, "the router Deployment sets no RELAY_CELLS"
    cells = json.loads(raw)
    assert set(cells) == set(CELL_REGIONS)
    refs = secret_refs(container)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    pod = by_component(ROUTER, "Deployment", "router")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["hop-ca"]["configMap"]["name"] == "relay-hop-ca"
    tags = set()
    for region, cell in cells.items():
        service = one(region, "Service", "cell-api")
        ns = service["metadata"]["namespace"]
        port = service["spec"]["ports"][0]["port"]
        assert cell["url"] in (f"https://cell-api.{ns}.svc:{port}",
                               f"https://cell-api.{ns}.svc.cluster.local:{port}"), "the hop must be TLS"
        host = cell["url"].split("://", 1)[1].rsplit(":", 1)[0]
        assert host in one(region, "Certificate", "cell-api")["spec"]["dnsNames"], f"{region} cert misses {host}"
        assert cell["ca_file"].startswith(mounts["hop-ca"]), "the router checks cells against the hop CA"
        assert ns == f"relay-{region}"
        regions = json.loads(env(region, only_container(by_component(region, "Deployment", "api")))["RELAY_REGIONS"])
        assert set(regions) == set(CELL_REGIONS), f"{region}'s RELAY_REGIONS lists {sorted(regions)}"
        assert cell["tag"] == regions[region], f"router and {region} disagree on its key tag"
        tags.add(cell["tag"])
        ref = VAR_REF.fullmatch(cell["hop_secret"])
        assert ref and ref.group(1) in refs, f"{region} hop secret is not read from a Secret"
        assert region in refs[ref.group(1)]["key"], f"{region} hop secret read from key {refs[ref.group(1)]['key']}"
    assert len(tags) == len(cells), "two regions share a key tag"


@pytest.mark.parametrize("region", CELL_REGIONS)
def test_the_cell_serves_the_hop_over_tls(region: str) -> None:
    """The API reads the certificate cert-manager issues for the names the router uses, and is probed over
    HTTPS (a plain-HTTP probe would fail and take every pod out of the Service)."""
    api = by_component(region, "Deployment", "api")
    container = only_container(api)
    settings = env(region, container)
    volumes = {v["name"]: v for v in api["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    cert = one(region, "Certificate", "cell-api")
    for var in ("RELAY_TLS_CERT_FILE", "RELAY_TLS_KEY_FILE"):
        directory, _, _ = settings[var].rpartition("/")
        assert volumes[mounts[directory]]["secret"]["secretName"] == cert["spec"]["secretName"], var
    assert cert["spec"]["issuerRef"] == {"group": "cert-manager.io", "kind": "ClusterIssuer", "name": "relay-hop-ca"}
    assert f"cell-api.relay-{region}.svc" in cert["spec"]["dnsNames"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"].get("scheme") == "HTTPS", probe


@pytest.mark.parametrize("region", CELL_REGIONS)
def test_region_pods_run_only_on_the_region_nodes(region: str) -> None:
    """Every pod of a region's cell requires nodes labelled with the region's cloud region, so a shared
    cluster never schedules EU compute (and the EU data in its memory) on another region's nodes."""
    cloud_region = env(region, only_container(by_component(region, "Deployment", "api")))["AWS_REGION"]
    for workload in workloads(region):
        terms = (workload["spec"]["template"]["spec"].get("affinity", {}).get("nodeAffinity", {})
                 .get("requiredDuringSchedulingIgnoredDuringExecution", {}).get("nodeSelectorTerms", []))
        name = workload["metadata"]["name"]
        assert terms, f"{region}: {name} may run on any node"
        for term in terms:  # every alternative must pin the region (terms are ORed)
            assert {"key": "topology.kubernetes.io/region", "operator": "In", "values": [cloud_region]} in \
                term["matchExpressions"], f"{region}: {name} is not pinned to {cloud_region}"


def test_the_directory_snapshot_outlives_a_pod() -> None:
    """A router pod that starts with the control DB down restores the last map a peer saved: the snapshot
    is on a volume the router pods share, not an emptyDir lost with the pod."""
    router = by_component(ROUTER, "Deployment", "router")
    container = only_container(router)
    path = env(ROUTER, container)["RELAY_DIRECTORY_SNAPSHOT"]
    mount = max((m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/")),
                key=lambda m: len(m["mountPath"]))
    volume = next(v for v in router["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    claim = one(ROUTER, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"], "router pods on several nodes share it"


# ------------------------------------------------------------------ schemas

SCHEMAS = Path(__file__).resolve().parent / "k8s_schemas"
KUBERNETES_VERSION = "1.33.0"
"""The oldest Kubernetes the manifests are written for (EKS, GKE and AKS all still offer it)."""
CUSTOM = {(s["apiVersion"], s["kind"]): s for s in
          (json.loads(p.read_text()) for p in sorted(SCHEMAS.glob("*.json")))}
EXAMPLES = sorted((OVERLAYS.parent / "examples").glob("*.yaml"))


def _validate(doc: Doc, where: str) -> None:
    key = (doc["apiVersion"], doc["kind"])
    if key in CUSTOM:
        try:
            jsonschema.validate(doc, CUSTOM[key]["schema"])
        except jsonschema.ValidationError as exc:
            pytest.fail(f"{where}: {doc['kind']}/{doc['metadata']['name']} is invalid: {exc.message}")
        return
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        pytest.fail(f"{where}: {key} has no schema (a CRD needs one in tests/k8s_schemas/)")
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{where}: {doc['kind']}/{doc['metadata']['name']} is invalid: {exc.message} at "
                    f"{'/'.join(str(p) for p in exc.path)}")


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_every_rendered_object_is_valid(overlay: str) -> None:
    """Offline, against the Kubernetes API's own JSON schemas (kubernetes-validate bundles them, strict:
    an unknown field is an error, as `kubectl apply --validate=strict` would say) and, for the custom
    resources used (KEDA, cert-manager, CloudNativePG), the schemas in tests/k8s_schemas/."""
    for doc in render(overlay):
        _validate(doc, overlay)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_valid(example: Path) -> None:
    docs = [d for d in yaml.safe_load_all(example.read_text()) if d]
    assert docs
    for doc in docs:
        _validate(doc, example.name)


def test_the_validator_refuses_what_the_api_server_would() -> None:
    """The check is real: a typo, a wrong type and a custom resource's unknown field all fail."""
    deployment = one("eu-west", "Deployment", "cell-api")
    typo = json.loads(json.dumps(deployment))
    typo["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    wrong = json.loads(json.dumps(deployment))
    wrong["spec"]["replicas"] = "two"
    scaled = json.loads(json.dumps(one("eu-west", "ScaledObject", "cell-worker")))
    scaled["spec"]["minReplicas"] = 2
    for bad in (typo, wrong, scaled):
        with pytest.raises(pytest.fail.Exception):
            _validate(bad, "a broken copy")
