"""The compose topology keeps every region's data inside that region.

docker-compose.yml is the one place where the residency invariants of
ARCHITECTURE.md (a cell uses only its own stores, cells never call each other,
the router holds no customer data) are enforced by wiring rather than by code:
a service can open a connection to another only if they share a network. No
Docker engine runs in CI, so these tests parse the file and compute that
reachability; a misplaced network or a copy-pasted URL pointing at the other
region fails here instead of leaking data in a deployment.

Regions are read from the file (every `cell-<region>` service), so a new region
is checked as soon as it is added.
"""

import functools
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

COMPOSE_FILE = Path(__file__).resolve().parents[1] / "docker-compose.yml"

ROUTER = "router"
ROUTER_STORES = ("router-postgres", "router-redis")
# Image name (without tag) of each kind of store a region runs.
STORE_IMAGES = {"postgres": "postgres", "redis": "redis", "minio": "minio/minio"}
REQUIRED_REGIONS = {"us-west", "eu-west"}

# `${VAR:-default}` / `${VAR-default}`: compose uses the default when VAR is unset.
_INTERPOLATION = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}")


@functools.cache
def compose() -> dict[str, Any]:
    """The parsed compose file, loaded once per test run."""
    with COMPOSE_FILE.open(encoding="utf-8") as f:
        data: dict[str, Any] = yaml.safe_load(f)
    return data


def services() -> dict[str, dict[str, Any]]:
    """All services by name."""
    result: dict[str, dict[str, Any]] = compose()["services"]
    return result


def service(name: str) -> dict[str, Any]:
    """One service, failing with the missing name rather than a KeyError."""
    assert name in services(), f"docker-compose.yml has no service {name!r}"
    return services()[name]


def regions() -> list[str]:
    """Every region the file defines, one per `cell-<region>` service."""
    cells = (name for name in services() if name.startswith("cell-"))
    return sorted(name.removeprefix("cell-") for name in cells)


def image_name(name: str) -> str:
    """A service's image without its tag (`postgres:16` -> `postgres`)."""
    image: str = service(name).get("image", "")
    return image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image


def networks(name: str) -> set[str]:
    """The networks a service is attached to (list or mapping form)."""
    declared = service(name).get("networks")
    # A service without `networks` joins the project's `default` network.
    return {"default"} if declared is None else set(declared)


def can_reach(a: str, b: str) -> bool:
    """Two services can talk iff they share a network."""
    return bool(networks(a) & networks(b))


def interpolate_defaults(value: str) -> str:
    """A value as compose would see it with no variables set."""
    resolved = _INTERPOLATION.sub(r"\1", value).replace("$$", "$")
    assert "${" not in resolved, f"variable without a default in {value!r}"
    return resolved


def host(url: str) -> str | None:
    """The host a URL points at: for s3:// URLs, the bucket."""
    return urlsplit(url).hostname


def environment(name: str) -> dict[str, str]:
    """A service's environment (list or mapping form) with defaults interpolated."""
    declared = service(name).get("environment") or {}
    if isinstance(declared, list):
        declared = dict(item.split("=", 1) for item in declared)
    return {key: interpolate_defaults(str(value)) for key, value in declared.items()}


def store_kinds() -> dict[str, str]:
    """Every store service mapped to its kind (postgres, redis, minio)."""
    by_image = {image: kind for kind, image in STORE_IMAGES.items()}
    images = {name: image_name(name) for name in services()}
    return {name: by_image[img] for name, img in images.items() if img in by_image}


def region_stores(region: str) -> set[str]:
    """The stores that hold one region's data."""
    return {f"{kind}-{region}" for kind in STORE_IMAGES}


def depends_on(name: str) -> dict[str, str]:
    """A service's dependencies mapped to the condition it waits for."""
    declared = service(name).get("depends_on") or {}
    if isinstance(declared, list):
        return dict.fromkeys(declared, "service_started")
    default = {"condition": "service_started"}
    return {dep: (spec or default)["condition"] for dep, spec in declared.items()}


def command(name: str) -> list[str]:
    """A service's command as a list of arguments."""
    declared = service(name).get("command", [])
    if isinstance(declared, str):
        return declared.split()
    return [str(arg) for arg in declared]


def test_regions_include_us_west_and_eu_west() -> None:
    assert set(regions()) >= REQUIRED_REGIONS


def test_every_region_runs_a_cell_api_worker_and_its_own_stores() -> None:
    for region in regions():
        assert command(f"cell-{region}") == ["cell", "--region", region]
        assert command(f"worker-{region}") == ["worker", "--region", region]
        for kind, image in STORE_IMAGES.items():
            assert image_name(f"{kind}-{region}") == image
        assert command(f"migrate-{region}") == ["db", "migrate", "--target", "cell"]


def test_every_store_belongs_to_the_router_or_one_region() -> None:
    known = set(ROUTER_STORES).union(*(region_stores(region) for region in regions()))
    unaccounted = set(store_kinds()) - known
    assert not unaccounted, f"stores outside the router and every region: {unaccounted}"


def test_router_has_its_own_postgres_and_redis() -> None:
    assert image_name("router-postgres") == "postgres"
    assert image_name("router-redis") == "redis"
    env = environment(ROUTER)
    assert host(env["RELAY_DATABASE_URL"]) == "router-postgres"
    assert host(env["RELAY_REDIS_URL"]) == "router-redis"
    for store in ROUTER_STORES:
        assert can_reach(ROUTER, store)
    migrate_db = environment("migrate-router")["RELAY_DATABASE_URL"]
    assert migrate_db == env["RELAY_DATABASE_URL"]
    assert command("migrate-router") == ["db", "migrate", "--target", "router"]


def test_router_is_on_every_edge_network() -> None:
    for region in regions():
        assert f"edge-{region}" in networks(ROUTER)
        assert can_reach(ROUTER, f"cell-{region}")


def test_region_stores_are_only_on_their_internal_region_network() -> None:
    declared_networks = compose()["networks"]
    for region in regions():
        network = f"region-{region}"
        settings = declared_networks[network] or {}
        assert settings.get("internal") is True, f"{network} must be internal"
        for store in region_stores(region):
            assert networks(store) == {network}, f"{store} is on {networks(store)}"


def test_cell_api_and_worker_reach_only_their_own_regions_stores() -> None:
    stores = set(store_kinds())
    for region in regions():
        for name in (f"cell-{region}", f"worker-{region}"):
            reachable = {store for store in stores if can_reach(name, store)}
            assert reachable == region_stores(region), f"{name} reaches {reachable}"


def test_cells_never_share_a_network_with_another_region() -> None:
    for region in regions():
        for other in regions():
            if other == region:
                continue
            for name in (f"cell-{region}", f"worker-{region}"):
                for peer in (f"cell-{other}", f"worker-{other}"):
                    assert not can_reach(name, peer), f"{name} can reach {peer}"


def test_router_shares_no_network_with_any_cell_store() -> None:
    for region in regions():
        for store in region_stores(region):
            assert not can_reach(ROUTER, store), f"router can reach {store}"


def test_cell_settings_name_their_own_regions_services() -> None:
    for region in regions():
        for name in (f"cell-{region}", f"worker-{region}"):
            env = environment(name)
            assert env["RELAY_REGION"] == region, name
            assert host(env["RELAY_DATABASE_URL"]) == f"postgres-{region}", name
            assert host(env["RELAY_REDIS_URL"]) == f"redis-{region}", name
            assert urlsplit(env["RELAY_OBJECT_STORE"]).scheme == "s3", name
            assert host(env["RELAY_OBJECT_STORE"]) == f"relay-{region}", name
            assert host(env["AWS_ENDPOINT_URL"]) == f"minio-{region}", name
        migrate_db = environment(f"migrate-{region}")["RELAY_DATABASE_URL"]
        assert host(migrate_db) == f"postgres-{region}"


def test_each_regions_bucket_is_created_in_its_own_store() -> None:
    for region in regions():
        init = f"minio-init-{region}"
        assert image_name(init) == "minio/mc"
        assert command(init)[-1].endswith(f"/relay-{region}")
        assert depends_on(init) == {f"minio-{region}": "service_healthy"}
        assert networks(init) == {f"region-{region}"}


def test_cells_start_after_migrations_and_healthy_stores() -> None:
    for region in regions():
        expected = dict.fromkeys(region_stores(region), "service_healthy")
        expected[f"migrate-{region}"] = "service_completed_successfully"
        expected[f"minio-init-{region}"] = "service_completed_successfully"
        for name in (f"cell-{region}", f"worker-{region}"):
            assert depends_on(name) == expected, name
    router_expected = dict.fromkeys(ROUTER_STORES, "service_healthy")
    router_expected["migrate-router"] = "service_completed_successfully"
    assert depends_on(ROUTER) == router_expected


def test_router_cells_config_lists_every_region_at_a_reachable_cell_api() -> None:
    cells: dict[str, dict[str, str]] = json.loads(environment(ROUTER)["RELAY_CELLS"])
    assert set(cells) == set(regions())
    tags = [cell["tag"] for cell in cells.values()]
    assert len(set(tags)) == len(tags), f"region tags are not unique: {tags}"
    for region, cell in cells.items():
        api = f"cell-{region}"
        assert host(cell["url"]) == api, f"{region} routes to {cell['url']}"
        assert can_reach(ROUTER, api)
        assert cell["hop_secret"] == environment(f"cell-{region}")["RELAY_HOP_SECRET"]
