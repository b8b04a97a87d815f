"""docker-compose.yml is valid Compose and runs the same node scripts as the native runner.

No Docker engine and no network are needed. The file is checked three ways:

1. against the Compose Specification's JSON schema (``tests/data/compose-spec.json``, vendored
   with its licence), as Compose sees it on a fresh clone: YAML anchors merged and every
   ``${VAR:-default}`` resolved with no ``.env`` and no variables set;
2. by a real Compose implementation, ``docker compose config`` (the v2 plugin) or Debian's
   ``docker-compose config``, which also resolves references and reads the env files.
   ``scripts/lib/install-test-deps.sh`` installs it; without it this test fails and says so;
3. against PilotChain's own rules: geth nodes run ``validator.sh``/``node.sh`` from the mounted
   project, images are pinned (geth exactly ``alltools-v1.13.15``, never ``latest``) and every one
   can be swapped through a variable whose default is the upstream pin, long-running
   services have healthchecks, geth gets time to shut down, the user-facing RPC exposes no
   admin/personal/miner/debug, the debug-enabled explorer node publishes nothing, and the
   portal keeps its index on a named volume, links trades to the explorer and serves uPlot
   from the image's own node_modules.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
SCHEMA_FILE = Path(__file__).resolve().parent / "data" / "compose-spec.json"
INSTALL_HINT = "run scripts/lib/install-docker.sh (installs Docker and Compose v2)"

GETH_IMAGE = "ethereum/client-go:alltools-v1.13.15"
# The upstream image each pulled service gets by default; a variable swaps it for a local build.
UPSTREAM_IMAGES = {
    **dict.fromkeys(["validator1", "validator2", "validator3", "rpc-node", "explorer-node",
                     "bootnode", "chain-check"], GETH_IMAGE),
    "redis": "redis:7.2.5-alpine",
    "mosquitto": "eclipse-mosquitto:2.0.22",
    "explorer-secrets": "postgres:17.6-alpine",
    "blockscout-db": "postgres:17.6-alpine",
    "blockscout-redis": "redis:7.4-alpine",
    "blockscout-backend": "ghcr.io/blockscout/blockscout:9.0.2",
    "blockscout-frontend": "ghcr.io/blockscout/frontend:v2.3.0",
    "blockscout-proxy": "nginx:1.28-alpine",
    "blockscout-verifier": "ghcr.io/blockscout/smart-contract-verifier:v1.10.3",
    # Prometheus's LTS line (profile `monitoring`).
    "prometheus": "prom/prometheus:v2.53.3",
}
# The base image of each Dockerfile, swapped by its PYTHON_IMAGE build argument.
UPSTREAM_BASES = {"Dockerfile": "python:3.11-slim-bookworm",
                  "docker/gsy-e/Dockerfile": "python:3.11-bookworm"}
# Blockscout's last GPL-3.0 releases: backend 10.x and frontend 2.7.x (later ones are not free).
GPL_BLOCKSCOUT = {"blockscout-backend": (11, 0), "blockscout-frontend": (2, 8)}
# blockscout-rs (the smart-contract verifier) was MIT up to v1.10.3; later releases are not free.
LAST_FREE_VERIFIER = (1, 10, 3)
# Settings Blockscout 9.0.2 reads only when its image is built (or never): inert in an env file.
INERT_BLOCKSCOUT_SETTINGS = {"API_V1_READ_METHODS_DISABLED", "API_V1_WRITE_METHODS_DISABLED",
                             "HEART_BEAT_TIMEOUT"}
GETH_NODES = {"validator1", "validator2", "validator3", "rpc-node", "explorer-node"}
NODE_SCRIPTS = {"/pilotchain/validator.sh": "validator.sh", "/pilotchain/node.sh": "node.sh"}
FORBIDDEN_USER_APIS = {"admin", "personal", "miner", "debug"}
MIN_GETH_GRACE_SECONDS = 60

# --- Reading the file the way Compose does ---------------------------------------------------

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Resolve ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` ... like Compose."""

    def replace(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("braced") or match.group("plain")
        op, arg = match.group("op"), match.group("arg") or ""
        value = env.get(name)
        unset_or_empty = not value if op and op.startswith(":") else value is None
        if op in (":-", "-"):
            return arg if unset_or_empty else value or ""
        if op in (":?", "?"):
            if unset_or_empty:
                raise ValueError(f"required variable {name} is not set: {arg}")
            return value or ""
        if op in (":+", "+"):
            return "" if unset_or_empty else arg
        return value or ""

    return _VARIABLE.sub(replace, text)


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    """Interpolate every string value (not keys) of a loaded YAML document."""
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(item, env) for item in node]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a Compose env file (KEY=VALUE lines, # comments)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value
    return values


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's environment as its container gets it: env files first, then ``environment``."""
    env: dict[str, str] = {}
    env_files = service.get("env_file", [])
    for entry in [env_files] if isinstance(env_files, str) else env_files:
        path = entry if isinstance(entry, str) else entry["path"]
        env.update(read_env_file(ROOT / path))
    declared = service.get("environment", {})
    if isinstance(declared, list):
        declared = dict(item.partition("=")[::2] for item in declared)
    env.update({key: "" if value is None else str(value) for key, value in declared.items()})
    return env


def duration_seconds(text: str) -> float:
    """Parse a Compose duration such as ``90s``, ``2m`` or ``1m30s``."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def bind_mounts(service: Mapping[str, Any]) -> Iterator[tuple[str, str, bool]]:
    """(host path, container path, read-only) for every bind mount of a service."""
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, _, rest = volume.partition(":")
            target, _, mode = rest.partition(":")
            read_only = "ro" in mode.split(",")
        else:
            if volume.get("type") != "bind":
                continue
            source, target, read_only = volume["source"], volume["target"], volume.get("read_only")
        if source.startswith((".", "/", "~")):
            yield source, target, bool(read_only)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker-compose.yml as Compose sees it on a fresh clone (anchors merged, defaults used)."""
    assert COMPOSE_FILE.is_file(), f"{COMPOSE_FILE} is missing"
    return interpolate_tree(yaml.safe_load(COMPOSE_FILE.read_text()), env={})


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def raw_services() -> dict[str, dict[str, Any]]:
    """docker-compose.yml's services before interpolation (anchors merged by YAML)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"]


def one_shot(service: Mapping[str, Any]) -> bool:
    """A set-up step that runs once per ``up`` (others depend on its successful completion);
    ``on-failure`` retries it until it succeeds once, e.g. while the RPC node starts."""
    return service.get("restart") in ("no", "on-failure")


# --- 1 and 2: it is valid Compose -------------------------------------------------------------


def test_matches_the_compose_specification_schema(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = [
        f"{'/'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in validator.iter_errors(compose)
    ]
    assert not errors, "docker-compose.yml breaks the Compose schema:\n" + "\n".join(errors)


def compose_command() -> list[str] | None:
    """The Compose CLI available here: the docker plugin, else the standalone docker-compose."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, timeout=60
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone else None


def test_compose_cli_accepts_the_file(tmp_path: Path) -> None:
    command = compose_command()
    if command is None:
        pytest.fail(f"neither 'docker compose' nor 'docker-compose' is installed; {INSTALL_HINT}")
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")
    # Only what the CLI needs to run (HOME and DOCKER_CONFIG locate the compose plugin) and an
    # empty env file: validate the defaults a fresh clone gets, whatever .env or the shell say.
    keep = ("PATH", "HOME", "DOCKER_CONFIG")
    clean_env = {key: os.environ[key] for key in keep if key in os.environ}
    result = subprocess.run(
        [
            *command,
            "--project-directory", str(ROOT),
            "--env-file", str(empty_env_file),
            "-f", str(COMPOSE_FILE),
            "config", "--quiet",
        ],
        capture_output=True, text=True, env=clean_env, timeout=120, check=False,
    )  # fmt: skip
    output = (result.stdout + result.stderr).strip()
    tool = " ".join([Path(command[0]).name, *command[1:]])
    assert result.returncode == 0, f"{tool} config rejects the file:\n{output}"
    assert "variable is not set" not in output, f"a variable has no default:\n{output}"


def test_references_are_defined(services: dict[str, dict[str, Any]], compose: dict) -> None:
    volumes, networks = set(compose.get("volumes") or {}), set(compose.get("networks") or {})
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown service {dependency}"
        for network in service.get("networks", []):
            assert network in networks, f"{name} joins undeclared network {network}"
        for volume in service.get("volumes", []):
            source = volume.partition(":")[0] if isinstance(volume, str) else volume.get("source")
            if source and not source.startswith((".", "/", "~")):
                assert source in volumes, f"{name} mounts undeclared volume {source}"


# --- 3: PilotChain's rules --------------------------------------------------------------------


def test_geth_nodes_run_the_native_runner_scripts(services: dict[str, dict[str, Any]]) -> None:
    geth_images = {name for name, svc in services.items() if svc.get("image") == GETH_IMAGE}
    geth_services = geth_images - {"bootnode", "chain-check"}
    assert geth_services == GETH_NODES
    for name in sorted(GETH_NODES):
        service = services[name]
        command = service.get("command")
        assert isinstance(command, list) and len(command) == 2 and command[0] == "sh", (
            f"{name}: command must be ['sh', '/pilotchain/<script>'], not {command!r}"
        )
        assert command[1] in NODE_SCRIPTS, f"{name} runs {command[1]}, not validator.sh/node.sh"
        assert (ROOT / NODE_SCRIPTS[command[1]]).is_file(), f"{NODE_SCRIPTS[command[1]]} missing"
        assert "entrypoint" not in service, f"{name} must not override the image entrypoint"
        mounts = {target: (source, ro) for source, target, ro in bind_mounts(service)}
        assert mounts.get("/pilotchain") == (".", True), (
            f"{name}: the project directory must be mounted read-only at /pilotchain"
        )
        expected = "validator.sh" if name.startswith("validator") else "node.sh"
        assert NODE_SCRIPTS[command[1]] == expected, f"{name} should run {expected}"


def test_no_geth_node_starts_on_another_chain_s_data(
        services: dict[str, dict[str, Any]]) -> None:
    """chain-check reads every node's data volume, and every node waits for it."""
    check = services["chain-check"]
    assert check["command"][:3] == ["sh", "/pilotchain/scripts/lib/check-chain-data.sh",
                                    "/pilotchain/genesis.json"]
    checked = dict(entry.split("=", 1) for entry in check["command"][3:])
    mounted = {target: source for source, _, target in
               (volume.partition(":") for volume in check["volumes"])}
    for name in sorted(GETH_NODES):
        data = next(volume.partition(":")[0] for volume in services[name]["volumes"]
                    if volume.endswith(":/data"))
        assert mounted.get(checked[name]) == data, f"chain-check does not read {name}'s {data}"
        assert services[name]["depends_on"]["chain-check"] == {
            "condition": "service_completed_successfully"}, f"{name} does not wait for it"


def test_validators_use_their_own_keys(services: dict[str, dict[str, Any]]) -> None:
    for number in (1, 2, 3):
        env = environment_of(services[f"validator{number}"])
        keys = f"/pilotchain/keys/validator{number}"
        assert env["KEYSTORE_FILE"] == f"{keys}/keystore.json"
        assert env["PASSWORD_FILE"] == f"{keys}/password"
        assert env["SIGNER_ADDRESS_FILE"] == f"{keys}/address"


def test_geth_and_bootnode_are_pinned_to_1_13_15(services: dict[str, dict[str, Any]]) -> None:
    for name in sorted(GETH_NODES | {"bootnode"}):
        assert services[name]["image"] == GETH_IMAGE, f"{name} must use {GETH_IMAGE}"


def test_no_service_needs_a_uid_setting(raw_services: dict[str, dict[str, Any]]) -> None:
    # The app image runs as the owner of the mounted project (docker/app/entrypoint.sh); gsy-e
    # starts as root only to read the Redis password, then drops to its own user.
    for name, service in sorted(raw_services.items()):
        expected = "root" if name == "gsy-e" else None
        assert service.get("user") == expected, f"{name} sets user: {service.get('user')!r}"
    assert "PILOTCHAIN_UID" not in COMPOSE_FILE.read_text()


def test_every_redis_client_uses_the_generated_password(
        raw_services: dict[str, dict[str, Any]]) -> None:
    """No service names a password-less REDIS_URL; the password file reaches each one."""
    for name in ("bridge", "faucet", "gsy-e", "ingest", "ingest-http", "ingest-mqtt"):
        env = raw_services[name]["environment"]
        assert "REDIS_URL" not in env and env["REDIS_HOST"] == "redis", name
        assert ".:/pilotchain:ro" in raw_services[name]["volumes"], name
    redis = raw_services["redis"]
    assert redis["command"] == ["sh", "/pilotchain/docker/redis/start.sh"]
    assert redis["environment"]["KEYS_DIR"] == "/pilotchain/keys"
    assert "$$KEYS_DIR/redis/password" in " ".join(redis["healthcheck"]["test"])


def test_every_image_defaults_to_its_upstream_pin_and_is_overridable(
        services: dict[str, dict[str, Any]], raw_services: dict[str, dict[str, Any]]) -> None:
    pulled = {name for name, service in services.items() if "build" not in service}
    assert pulled == set(UPSTREAM_IMAGES), "a pulled service is missing from UPSTREAM_IMAGES"
    for name, upstream in sorted(UPSTREAM_IMAGES.items()):
        assert services[name]["image"] == upstream, f"{name} defaults to {services[name]['image']}"
        variables = re.findall(r"\$\{([A-Z_]+):-[^}]*\}", raw_services[name]["image"])
        assert variables, f"{name}: image {raw_services[name]['image']!r} cannot be overridden"
        swapped = interpolate(raw_services[name]["image"],
                              {variable: "pilotchain-local/x" for variable in variables})
        assert "pilotchain-local/x" in swapped and upstream not in swapped, name


def test_dockerfile_bases_default_to_upstream_and_are_overridable(
        services: dict[str, dict[str, Any]]) -> None:
    for dockerfile, upstream in sorted(UPSTREAM_BASES.items()):
        text = (ROOT / dockerfile).read_text()
        assert f"ARG PYTHON_IMAGE={upstream}\n" in text, f"{dockerfile}: default is not {upstream}"
        froms = re.findall(r"^FROM (.+)$", text, flags=re.MULTILINE)
        assert froms == ["${PYTHON_IMAGE}"], f"{dockerfile}: FROM {froms}"
    for name, service in sorted(services.items()):
        build = service.get("build")
        if build is None:
            continue
        build = build if isinstance(build, dict) else {"context": build}
        dockerfile, args = build.get("dockerfile", "Dockerfile"), build.get("args", {})
        assert args.get("PYTHON_IMAGE") == UPSTREAM_BASES[dockerfile], (
            f"{name}: its PYTHON_IMAGE build argument must default to {UPSTREAM_BASES[dockerfile]}")


def test_blockscout_stays_on_its_gpl_releases(services: dict[str, dict[str, Any]]) -> None:
    for name, first_non_free in sorted(GPL_BLOCKSCOUT.items()):
        tag = services[name]["image"].rpartition(":")[2]
        version = tuple(int(part) for part in tag.lstrip("v").split(".")[:2])
        assert version < first_non_free, f"{name} {tag} is not a GPL-3.0 release of Blockscout"


def test_the_verifier_stays_on_its_last_free_release(
        services: dict[str, dict[str, Any]]) -> None:
    tag = services["blockscout-verifier"]["image"].rpartition(":")[2]
    version = tuple(int(part) for part in tag.lstrip("v").split("."))
    assert version <= LAST_FREE_VERIFIER, f"blockscout-verifier {tag} is not an MIT release"


def test_every_image_is_pinned_and_never_latest(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name} has no image (a build needs an explicit image name and tag)"
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest", f"{name}: image {image!r} uses the latest tag"
    raw = COMPOSE_FILE.read_text()
    assert not re.search(r"[:\-]latest\b", raw), "docker-compose.yml mentions a latest tag"


def test_long_running_services_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert "restart" in service, f"{name} must declare a restart policy"
        if one_shot(service):
            continue
        check = service.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no healthcheck"
        assert check["test"] not in (["NONE"], "NONE"), f"{name} disables its healthcheck"


def test_geth_nodes_get_time_to_shut_down(services: dict[str, dict[str, Any]]) -> None:
    for name in sorted(GETH_NODES):
        grace = services[name].get("stop_grace_period", "10s")
        assert duration_seconds(grace) >= MIN_GETH_GRACE_SECONDS, (
            f"{name}: stop_grace_period {grace} is too short; geth rewinds when killed"
        )


def test_nodes_wait_for_init_and_a_healthy_bootnode(services: dict[str, dict[str, Any]]) -> None:
    assert one_shot(services["init"])
    assert services["bootnode"]["depends_on"]["init"]["condition"] == (
        "service_completed_successfully"
    )
    for name in sorted(GETH_NODES):
        depends = services[name]["depends_on"]
        assert depends["init"]["condition"] == "service_completed_successfully", name
        assert depends["bootnode"]["condition"] == "service_healthy", name


def test_rpc_node_exposes_only_user_apis(services: dict[str, dict[str, Any]]) -> None:
    apis = set(environment_of(services["rpc-node"])["RPC_APIS"].split(","))
    assert "eth" in apis
    assert not apis & FORBIDDEN_USER_APIS, f"rpc-node exposes {sorted(apis & FORBIDDEN_USER_APIS)}"


def test_rpc_node_lets_in_only_the_stacks_pages_and_names(
        services: dict[str, dict[str, Any]], compose: dict[str, Any]) -> None:
    """node.sh lets no page in and answers only localhost unless told otherwise; Compose tells
    it the stack's own pages (faucet, portal, explorer: over WebSocket not the explorer, whose
    port-80 origin geth would let in on every port) and names (the services reach it as
    rpc-node), plus RPC_CORS_ORIGINS and RPC_VHOSTS; explorer-node answers only Blockscout."""
    node_sh = (ROOT / "node.sh").read_text()
    assert ': "${CORS_DOMAINS:=}"' in node_sh and ': "${VHOSTS:=localhost}"' in node_sh
    env = environment_of(services["rpc-node"])
    assert env["CORS_DOMAINS"].split(",") == [
        "http://localhost:9000", "http://localhost:9200", "http://localhost:80"]
    assert env["WS_ORIGINS"].split(",") == ["http://localhost:9000", "http://localhost:9200"]
    assert env["VHOSTS"].split(",") == ["localhost", "rpc-node", "localhost"]
    assert all(url.startswith("http://rpc-node:") for url in (
        environment_of(services[name])["RPC_URL"] for name in ("deploy", "bridge", "faucet",
                                                               "portal", "closer", "ingest")))
    explorer_node = environment_of(services["explorer-node"])
    assert explorer_node["VHOSTS"] == "explorer-node,localhost"
    assert "CORS_DOMAINS" not in explorer_node  # no browser page; it publishes no port
    assert not services["explorer-node"].get("ports")

    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    custom = interpolate_tree(raw, {"PUBLIC_HOST": "pilot.lan", "PORTAL_PORT": "9300",
                                    "RPC_CORS_ORIGINS": "https://app.pilot.test",
                                    "RPC_VHOSTS": "rpc.pilot.test"})["services"]
    env = environment_of(custom["rpc-node"])
    assert env["CORS_DOMAINS"].split(",") == [
        "http://pilot.lan:9000", "http://pilot.lan:9300", "http://pilot.lan:80",
        "https://app.pilot.test"]
    assert env["WS_ORIGINS"].split(",") == [
        "http://pilot.lan:9000", "http://pilot.lan:9300", "https://app.pilot.test"]
    assert env["VHOSTS"].split(",") == ["localhost", "rpc-node", "pilot.lan", "rpc.pilot.test"]
    assert environment_of(custom["portal"])["PORTAL_DOMAIN"] == "pilot.lan:9300"


def test_explorer_node_is_unreachable_from_outside(
    services: dict[str, dict[str, Any]], compose: dict[str, Any]
) -> None:
    explorer_node = services["explorer-node"]
    assert not explorer_node.get("ports"), "explorer-node must not publish ports"
    assert "debug" in environment_of(explorer_node)["RPC_APIS"].split(",")
    for network in explorer_node["networks"]:
        assert compose["networks"][network].get("internal") is True, (
            f"explorer-node joins {network}, which is not internal"
        )


def test_only_user_facing_services_publish_ports(
    services: dict[str, dict[str, Any]],
) -> None:
    publishing = {name for name, service in services.items() if service.get("ports")}
    assert publishing == {"rpc-node", "blockscout-proxy", "faucet", "bridge", "mosquitto",
                          "ingest-http", "portal", "prometheus"}
    for name in sorted(publishing):
        for port in services[name]["ports"]:
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port} is not on loopback"


def test_blockscout_reads_the_chain_from_explorer_node(
    services: dict[str, dict[str, Any]],
) -> None:
    env = environment_of(services["blockscout-backend"])
    assert env["ETHEREUM_JSONRPC_VARIANT"] == "geth"
    assert env["BLOCK_TRANSFORMER"] == "clique"
    assert env["ETHEREUM_JSONRPC_HTTP_URL"].startswith("http://explorer-node:")
    assert env["ETHEREUM_JSONRPC_TRACE_URL"].startswith("http://explorer-node:")
    assert env["ETHEREUM_JSONRPC_WS_URL"].startswith("ws://explorer-node:")
    assert env["CHAIN_ID"] == "8765"
    for path in [COMPOSE_FILE, *sorted((ROOT / "envs").glob("*.env"))]:
        text = path.read_text()
        assert "host.docker.internal" not in text, f"{path.name} uses host.docker.internal"


def test_the_broker_takes_only_the_generated_mqtt_passwords(
        raw_services: dict[str, dict[str, Any]]) -> None:
    """mosquitto refuses anonymous clients and gets its accounts from keys/mqtt/ (start.sh);
    no MQTT password is set in the file, every MQTT client reads its own from KEYS_DIR."""
    broker = raw_services["mosquitto"]
    assert broker["command"] == ["sh", "/pilotchain/docker/mosquitto/start.sh"]
    assert ".:/pilotchain:ro" in broker["volumes"]
    script = (ROOT / "docker" / "mosquitto" / "start.sh").read_text()
    assert "allow_anonymous false" in script and "mosquitto_passwd -U" in script
    assert "$keys/mqtt/$user.password" in script
    for name, service in raw_services.items():
        env = service.get("environment") or {}
        assert not {key for key in env if "MQTT" in key and "PASSWORD" in key}, name
    subscriber = raw_services["ingest-mqtt"]["environment"]
    assert subscriber["MQTT_HOST"] == "mosquitto"
    assert subscriber["KEYS_DIR"] == broker["environment"]["KEYS_DIR"] == "/pilotchain/keys"
    assert subscriber["MQTT_TOPIC"] == broker["environment"]["MQTT_TOPIC"]


def test_no_secret_is_committed() -> None:
    secret_names = {"SECRET_KEY_BASE", "DATABASE_URL", "POSTGRES_PASSWORD", "RELEASE_COOKIE"}
    for path in sorted((ROOT / "envs").glob("*.env")):
        for key, value in read_env_file(path).items():
            assert not (key in secret_names and value), f"{path.name} commits a value for {key}"


def test_bind_mounts_are_committed_directories(services: dict[str, dict[str, Any]]) -> None:
    # Docker creates a missing bind source as a directory, so a file that only exists after
    # `pilotchain init` (genesis.json, keys/...) must never be bind-mounted on its own.
    for name, service in services.items():
        for source, target, _ in bind_mounts(service):
            path = (ROOT / source).resolve()
            assert path.is_dir(), f"{name}: bind mount {source} -> {target} is not a directory"


def test_the_image_build_context_holds_every_package() -> None:
    """The allow-list in .dockerignore must let in every package pip installs into the image:
    a missing one builds fine and dies at start (`No module named ...`), twice so far."""
    import tomllib

    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"]["find"]["include"]
    allowed = set((ROOT / ".dockerignore").read_text().split())
    top_level = {name.split(".")[0] for name in packages}
    assert {f"!{name}/" for name in top_level} <= allowed, top_level


def test_the_portal_indexes_into_a_volume_and_links_to_the_explorer(
        services: dict[str, dict[str, Any]], compose: dict[str, Any]) -> None:
    indexer, web = services["portal-indexer"], services["portal"]
    app = services["bridge"]["image"]
    assert indexer["image"] == web["image"] == app, "the portal runs the PilotChain image"
    assert indexer["command"] == ["pilotchain-portal-indexer"]
    assert web["command"][0] == "gunicorn" and web["command"][-1] == "portal.web.app:create_app()"
    # Its configuration module binds PORTAL_HOST:PORTAL_PORT (and the metrics port).
    assert "python:portal.web.gunicorn_conf" in web["command"]
    web_env = environment_of(web)
    assert (web_env["PORTAL_HOST"], web_env["PORTAL_PORT"]) == ("0.0.0.0", "9200")
    assert web["ports"] == ["127.0.0.1:9200:9200"]
    # Both read the same index: by default a SQLite file on a named volume, not in the image
    # or the (read-only) project directory; the session secret lives beside it.
    url = environment_of(indexer)["PORTAL_DATABASE_URL"]
    assert url == environment_of(web)["PORTAL_DATABASE_URL"]
    assert url.startswith("sqlite:////var/lib/pilotchain/portal/"), url
    for service in (indexer, web):
        assert "portal-data:/var/lib/pilotchain/portal" in service["volumes"]
        assert ".:/pilotchain:ro" in service["volumes"]
        assert environment_of(service)["DEPLOYMENT_FILE"] == (
            environment_of(services["bridge"])["DEPLOYMENT_FILE"])
    assert "portal-data" in compose["volumes"]
    assert environment_of(web)["PORTAL_SECRET_FILE"].startswith("/var/lib/pilotchain/portal/")
    # Trade links open the explorer's proxy; sign-in messages name what the browser shows.
    env = environment_of(web)
    assert env["EXPLORER_URL"] == "http://localhost:80"
    assert services["blockscout-proxy"]["ports"] == ["127.0.0.1:80:80"]
    assert env["PORTAL_DOMAIN"] == "localhost:9200"
    # It listens on every interface, where the portal requires PORTAL_DOMAIN.
    assert env["PORTAL_HOST"] == "0.0.0.0"
    assert env["PORTAL_SECURE_COOKIES"] == "true"
    # The indexer starts on a deployed contract; the pages once the index exists.
    assert indexer["depends_on"]["deploy"]["condition"] == "service_completed_successfully"
    assert web["depends_on"]["portal-indexer"]["condition"] == "service_healthy"
    assert indexer["healthcheck"]["test"] == ["CMD", "pilotchain-portal-indexer", "--check"]
    assert "http://127.0.0.1:9200/health" in " ".join(web["healthcheck"]["test"])


def test_the_image_serves_the_pinned_uplot_from_its_node_modules() -> None:
    """npm ci of the committed lock file in PILOTCHAIN_HOME, where the portal looks when it
    runs from site-packages: no CDN, nothing fetched at run time."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "PILOTCHAIN_HOME=/opt/pilotchain" in dockerfile
    assert re.search(r'COPY package\.json package-lock\.json \$PILOTCHAIN_HOME/', dockerfile), \
        "the image must copy package.json and its lock file"
    assert 'cd "$PILOTCHAIN_HOME" && npm ci' in dockerfile
    assert "uplot" in json.loads((ROOT / "package.json").read_text())["dependencies"]
    assert "node_modules/uplot" in json.loads((ROOT / "package-lock.json").read_text())[
        "packages"]


def test_the_documented_postgresql_override_merges(tmp_path: Path) -> None:
    """docs/compose.md's docker-compose.override.yml for a portal database of its own, merged
    by the real Compose CLI: both portal services get the PostgreSQL URL, and the indexer
    waits for that server as well as for the deployment."""
    command = compose_command()
    if command is None:
        pytest.fail(f"neither 'docker compose' nor 'docker-compose' is installed; {INSTALL_HINT}")
    docs = (ROOT / "docs" / "compose.md").read_text()
    section = docs[docs.index("#### The portal's database"):]
    override = tmp_path / "docker-compose.override.yml"
    override.write_text(section.split("```yaml\n", 1)[1].split("```", 1)[0])
    url = "postgresql://portal:secret@portal-db:5432/portal"
    keep = ("PATH", "HOME", "DOCKER_CONFIG")
    env = {key: os.environ[key] for key in keep if key in os.environ}
    env.update(PORTAL_DB_PASSWORD="secret", PORTAL_DATABASE_URL=url)
    result = subprocess.run(
        [*command, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), "-f",
         str(override), "config", "--format", "json"],
        capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.returncode == 0, f"the documented override does not merge:\n{result.stderr}"
    merged = json.loads(result.stdout)["services"]
    for name in ("portal-indexer", "portal"):
        assert merged[name]["environment"]["PORTAL_DATABASE_URL"] == url, name
    assert set(merged["portal-indexer"]["depends_on"]) == {"deploy", "rpc-node", "portal-db"}
    assert merged["portal-db"]["networks"].keys() == {"chain"}
    assert merged["portal-db"]["healthcheck"]["test"]


# --- The simulation and the explorer (issue 23) ------------------------------------------------


def compose_services(*profiles: str) -> set[str]:
    """The services ``docker compose config --services`` lists with ``profiles`` active."""
    command = compose_command()
    assert command is not None, INSTALL_HINT
    keep = ("PATH", "HOME", "DOCKER_CONFIG")
    result = subprocess.run(
        [*command, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE),
         *(arg for profile in profiles for arg in ("--profile", profile)),
         "config", "--services"],
        capture_output=True, text=True, timeout=120, check=False,
        env={key: os.environ[key] for key in keep if key in os.environ})
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_the_simulation_runs_only_when_asked(services: dict[str, dict[str, Any]]) -> None:
    """gsy-e is in the `simulation` profile: no plain `up` starts it (a pilot that bills from
    this Settlement must never get a synthetic day it did not ask for), and the file is valid
    with every profile on."""
    profiles = {profile for service in services.values()
                for profile in service.get("profiles", [])}
    assert services["gsy-e"].get("profiles") == ["simulation"]
    assert profiles == {"simulation", "monitoring"}
    plain, everything = compose_services(), compose_services(*sorted(profiles))
    assert "gsy-e" not in plain and everything == plain | {"gsy-e", "prometheus"}
    for name in plain:
        assert "gsy-e" not in services[name].get("depends_on", {}), name


def test_the_monitoring_profile_scrapes_every_metrics_port_and_geth_node(
        services: dict[str, dict[str, Any]]) -> None:
    """Prometheus only with `--profile monitoring`; its configuration (monitoring/) names every
    service's metrics port and every geth node's, each node's metrics bound to its own address
    in the internal "chain" network; no metrics port of the faucet, the portal or a node is
    published; the configuration and rules pass promtool."""
    prometheus = services["prometheus"]
    assert prometheus["profiles"] == ["monitoring"]
    assert "./monitoring:/etc/pilotchain:ro" in prometheus["volumes"]
    assert set(prometheus["networks"]) == {"chain", "public"}
    config = yaml.safe_load((ROOT / "monitoring" / "prometheus.compose.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {job: {target for static in spec["static_configs"] for target in static["targets"]}
               for job, spec in jobs.items()}
    assert jobs["geth"]["metrics_path"] == "/debug/metrics/prometheus"
    expected = set()
    for name in sorted(GETH_NODES):
        env = environment_of(services[name])
        chain = services[name]["networks"]["chain"]
        assert (env["METRICS_ADDR"], env["METRICS_PORT"]) == (chain["ipv4_address"], "6060")
        # A node in another network too is named by its alias in "chain": its plain name may
        # resolve to the other address, where its metrics do not listen.
        if set(services[name]["networks"]) == {"chain"}:
            expected.add(f"{name}:6060")
        else:
            assert f"{name}.chain" in chain["aliases"], name
            expected.add(f"{name}.chain:6060")
    assert targets["geth"] == expected
    for service, prefix in (("faucet", "FAUCET"), ("portal", "PORTAL")):
        env = environment_of(services[service])
        port = env[f"{prefix}_METRICS_PORT"]
        assert targets[service] == {f"{service}:{port}"}
        assert env[f"{prefix}_METRICS_DIR"].startswith("/tmp/")
        published = [str(mapping).rpartition(":")[2] for mapping in services[service]["ports"]]
        assert port not in published, f"{service} publishes its metrics port"
    for service in ("bridge", "ingest", "ingest-mqtt", "closer"):
        assert any(target.startswith(f"{service}:") for target in targets[service]), service
    checked = subprocess.run(["promtool", "check", "config", "prometheus.compose.yml"],
                             cwd=ROOT / "monitoring", capture_output=True, text=True,
                             timeout=120, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_gsy_e_runs_as_its_user_and_keeps_its_export_and_overflow_on_volumes(
        services: dict[str, dict[str, Any]]) -> None:
    gsy_e, bridge = services["gsy-e"], services["bridge"]
    assert gsy_e["entrypoint"] == ["sh", "/pilotchain/docker/gsy-e/start.sh"]
    env = environment_of(gsy_e)
    mounts = {volume.partition(":")[2].partition(":")[0]: volume.partition(":")[0]
              for volume in gsy_e["volumes"]}
    assert env["GSY_E_EXPORT_DIR"].startswith("/var/lib/gsy-e/")
    assert mounts["/var/lib/gsy-e"] == "gsy-e-exports"
    overflow_dir = str(Path(env["BRIDGE_PLUGIN_OVERFLOW_FILE"]).parent)
    assert mounts[overflow_dir] == "trade-overflow"
    assert f"trade-overflow:{overflow_dir}:ro" in bridge["volumes"]
    assert "gsy-e-exports:/var/lib/gsy-e:ro" in bridge["volumes"]
    host, _, port = env["KAFKA_URL"].partition(":")
    assert host == "127.0.0.1" and port == "1", "gsy-e must not look for Kafka anywhere real"
    script = (ROOT / "docker" / "gsy-e" / "start.sh").read_text()
    assert 'HOME="$home"' in script, "gsy-e must get its own user's HOME, not root's"


def test_blockscout_verifies_through_its_own_verifier_and_has_no_inert_settings(
        services: dict[str, dict[str, Any]]) -> None:
    backend = environment_of(services["blockscout-backend"])
    assert not INERT_BLOCKSCOUT_SETTINGS & set(backend), "inert settings in the backend's env"
    assert backend["MICROSERVICE_SC_VERIFIER_ENABLED"] == "true"
    assert backend["MICROSERVICE_SC_VERIFIER_TYPE"] == "sc_verifier"
    assert backend["MICROSERVICE_SC_VERIFIER_URL"] == "http://blockscout-verifier:8050/"
    verify = services["verify-contract"]
    assert verify["command"] == ["pilotchain", "explorer", "verify"]
    assert one_shot(verify)
    assert verify["depends_on"]["deploy"]["condition"] == "service_completed_successfully"
    assert verify["depends_on"]["blockscout-backend"]["condition"] == "service_healthy"
    assert environment_of(verify)["EXPLORER_URL"] == "http://blockscout-backend:4000"
    assert {"chain", "explorer"} <= set(verify["networks"])


def test_the_explorer_api_is_limited_per_client_at_the_proxy(
        services: dict[str, dict[str, Any]]) -> None:
    """Blockscout's own per-address limit would count every browser as the proxy."""
    assert environment_of(services["blockscout-backend"])["API_RATE_LIMIT_DISABLED"] == "true"
    proxy = (ROOT / "docker" / "blockscout" / "proxy" / "default.conf").read_text()
    assert re.search(r"limit_req_zone \$binary_remote_addr zone=explorer_api:\S+ rate=\d+r/s;",
                     proxy)
    assert "limit_req          zone=explorer_api" in proxy and "limit_req_status   429;" in proxy
    assert "$proxy_add_x_forwarded_for" not in proxy, "a client could pick its own address"
