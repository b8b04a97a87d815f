"""The shape of the code: the direction of imports, one home per setting, docs that match.

- ``pilotchain`` (chain access, keys, genesis, contract, governance) imports none of the
  packages above it, so a service's setting can never break a chain command.
- ``worker`` (the stream-to-chain loop, its endpoint and edge) stands on the core alone.
- The services (bridge, ingest, closer, faucet, portal) import the core and the worker but
  neither each other nor the runner; nothing imports the runner (the top of the graph) but
  tests and benchmarks. So a reading's path (the ingest, then the worker, then the core)
  only ever goes down.
- Only the settings module reads the process environment.
- docs/settings.md and .env.example are exactly what the settings' declarations generate.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pilotchain.settings import PROJECT_ROOT
from runner.cli import ALL_SETTINGS, ENV_EXAMPLE_PREAMBLE, SETTINGS_PREAMBLE

PACKAGES = ("pilotchain", "worker", "bridge", "faucet", "ingest", "closer", "portal", "runner")
# The services, each of which may import the core and the worker but no other service.
SERVICES = ("bridge", "faucet", "ingest", "closer", "portal")
# What each package may import from the project's own packages.
ALLOWED = {
    "pilotchain": {"pilotchain"},
    "worker": {"pilotchain", "worker"},
    **{service: {"pilotchain", "worker", service} for service in SERVICES},
    "runner": set(PACKAGES),
}
# Modules that may read os.environ, and why.
ENVIRONMENT_READERS = {
    # load_environment: the one place settings come from; PILOTCHAIN_HOME locates the project.
    "pilotchain/settings.py",
    # geth and bootnode inherit PATH and HOME, nothing else of ours.
    "runner/localnet.py",
    # prometheus_client's multiprocess mode is switched on by PROMETHEUS_MULTIPROC_DIR alone:
    # gunicorn's master sets it from FAUCET_/PORTAL_METRICS_DIR, the workers' app reads it.
    "pilotchain/gunicorn_hooks.py",
    "pilotchain/webmetrics.py",
}


def project_imports(path: Path) -> set[str]:
    """The project packages ``path`` imports (top-level names, at any depth of the module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        found.update(name.split(".")[0] for name in names
                     if name.split(".")[0] in PACKAGES)
    return found


def modules(package: str) -> list[Path]:
    return sorted((PROJECT_ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_down_only(package: str) -> None:
    wrong = {
        str(path.relative_to(PROJECT_ROOT)): sorted(project_imports(path) - ALLOWED[package])
        for path in modules(package)
    }
    wrong = {module: names for module, names in wrong.items() if names}
    assert wrong == {}, f"{package} may import only {sorted(ALLOWED[package])}"


def imported_modules(path: Path) -> set[str]:
    """The project modules ``path`` imports, by dotted name (``worker.loop``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def module_path(name: str) -> Path:
    base = PROJECT_ROOT.joinpath(*name.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def reachable(start: str) -> dict[str, str]:
    """Every project module ``start`` reaches through imports, each with the module that
    first imported it (a path through the code, walked breadth first)."""
    seen: dict[str, str] = {start: ""}
    todo = [start]
    while todo:
        current = todo.pop(0)
        path = module_path(current)
        if not path.exists():
            continue
        for name in sorted(imported_modules(path)):
            if name not in seen:
                seen[name] = current
                todo.append(name)
    return seen


PACKAGE_LEVEL = {"pilotchain": 0, "worker": 1, **dict.fromkeys(SERVICES, 2), "runner": 3}


@pytest.mark.parametrize("start", ["ingest.cli", "ingest.http", "bridge.cli", "closer.cli"])
def test_a_services_path_through_the_code_goes_down_only(start: str) -> None:
    """From a service's entry point (a reading's: the door, the writer), every import leads
    to the service itself, the worker or the core, each step to the same package or a lower
    one: never back up, never into another service."""
    service = start.split(".")[0]
    seen = reachable(start)
    assert {name.split(".")[0] for name in seen} <= {service, "worker", "pilotchain"}
    upward = {name: importer for name, importer in seen.items() if importer
              and PACKAGE_LEVEL[name.split(".")[0]] > PACKAGE_LEVEL[importer.split(".")[0]]}
    assert upward == {}


def test_the_core_commands_ignore_service_settings() -> None:
    """A bad faucet or bridge setting leaves the chain's own commands alone."""
    env = {**os.environ, "FAUCET_AMOUNT": "abc", "BRIDGE_GAS_BUDGET": "5"}
    result = subprocess.run(
        [sys.executable, "-m", "runner.cli", "signers", "--ipc", "/nonexistent/geth.ipc"],
        capture_output=True, text=True, env=env, cwd=PROJECT_ROOT, timeout=60, check=False)
    assert result.returncode == 1
    assert "FAUCET_AMOUNT" not in result.stderr and "BRIDGE_GAS_BUDGET" not in result.stderr
    assert "/nonexistent/geth.ipc" in result.stderr
    assert "Traceback" not in result.stderr


def reads_environment(path: Path) -> bool:
    """Whether the module touches ``os.environ`` or calls ``os.getenv`` (not in a docstring)."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if (isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv"}
                and isinstance(node.value, ast.Name) and node.value.id == "os"):
            return True
    return False


def test_only_the_settings_module_reads_the_environment() -> None:
    readers = {
        str(path.relative_to(PROJECT_ROOT))
        for package in PACKAGES for path in modules(package) if reads_environment(path)
    }
    assert readers <= ENVIRONMENT_READERS


def test_every_setting_is_declared_once() -> None:
    """A name listed under several services (REDIS_URL, BRIDGE_STREAM) is one declaration."""
    declarations: dict[str, set[int]] = {}
    for group in ALL_SETTINGS:
        for setting in group.settings:
            declarations.setdefault(setting.name, set()).add(id(setting))
    assert {name for name, ids in declarations.items() if len(ids) > 1} == set()


def test_the_settings_reference_is_generated_from_the_declarations() -> None:
    from pilotchain.settings import markdown

    written = (PROJECT_ROOT / "docs" / "settings.md").read_text()
    assert written == markdown(ALL_SETTINGS, SETTINGS_PREAMBLE), (
        "docs/settings.md is out of date: run "
        "`.venv/bin/pilotchain config --markdown > docs/settings.md`")


def test_env_example_is_generated_from_the_declarations() -> None:
    from pilotchain.settings import env_example

    written = (PROJECT_ROOT / ".env.example").read_text()
    assert written == env_example(ALL_SETTINGS, ENV_EXAMPLE_PREAMBLE), (
        ".env.example is out of date: run `.venv/bin/pilotchain config --env-example > "
        ".env.example`")


# Pages whose tables document other interfaces that share a few names with the settings.
OTHER_INTERFACES = {
    "settings.md": "the reference itself",
    "compose.md": "Compose's own variables, interpolated into docker-compose.yml",
    "chain.md": "the environment of validator.sh and node.sh, the node entrypoints",
}


def test_no_settings_table_outside_the_reference() -> None:
    """Every other page links to docs/settings.md instead of copying a table that would drift
    (a row that starts with a setting's name is a copy; a ports map naming it is not)."""
    names = {setting.name for group in ALL_SETTINGS for setting in group.settings}
    pages = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
    copies = {
        str(page.relative_to(PROJECT_ROOT)): sorted(
            name for name in names for row in page.read_text().splitlines()
            if row.startswith(f"| `{name}` |"))
        for page in pages if page.name not in OTHER_INTERFACES
    }
    assert {page: found for page, found in copies.items() if found} == {}
