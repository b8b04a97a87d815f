"""How gsy-e's plug-in is installed: ``scripts/install-plugin`` into fresh virtual environments
(no system site-packages), its refusal next to a distribution named gsy-dex, the shim's own
refusal, and PilotChain's distribution without any ``gsy_dex``.

pip takes redis and setuptools from the package index, as ``./scripts/test`` itself does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pilotchain.settings import PROJECT_ROOT

INSTALL = PROJECT_ROOT / "scripts" / "install-plugin"
REFUSAL = ("whose gsy_dex package the plug-in would overwrite; install the plug-in into a gsy-e "
           "environment without gsy-dex.")
SHIM_REFUSAL = ("are both present in this environment and both provide "
                "gsy_dex.trade_store.market_interface; uninstall both")


def run(args: list[str | Path], cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def fresh_venv(where: Path) -> Path:
    """A new environment with pip and nothing of this one's packages; its interpreter."""
    result = run([sys.executable, "-m", "venv", where], cwd=where.parent)
    assert result.returncode == 0, result.stderr
    assert "include-system-site-packages = false" in (where / "pyvenv.cfg").read_text()
    return where / "bin" / "python"


def installed(python: Path, cwd: Path) -> dict[str, str]:
    """Distribution name -> version, as the environment's importlib.metadata sees it."""
    code = ("import json; from importlib import metadata\n"
            "print(json.dumps({d.metadata['Name']: d.version for d in metadata.distributions()}))")
    result = run([python, "-P", "-c", code], cwd=cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def clean_env() -> dict[str, str]:
    """This process's environment without what would leak the dev environment into another."""
    return {k: v for k, v in os.environ.items()
            if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}


@pytest.fixture(scope="module")
def gsy_e_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A gsy-e-like environment with the plug-in installed the documented way."""
    root = tmp_path_factory.mktemp("gsy-e-env")
    python = fresh_venv(root / "venv")
    result = run([INSTALL, python], cwd=root, env=clean_env())
    assert result.returncode == 0, result.stderr
    assert f"installing pilotchain-gsy-plugin into {root / 'venv'}" in result.stderr
    assert "REDIS_URL" in result.stderr and "BRIDGE_STREAM" in result.stderr
    return python


@pytest.fixture(scope="module")
def gsy_dex_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An environment holding a stand-in distribution named gsy-dex with its own gsy_dex."""
    root = tmp_path_factory.mktemp("gsy-dex-env")
    source = root / "gsy-dex-src"
    (source / "gsy_dex" / "trade_store").mkdir(parents=True)
    (source / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=69"]\n'
        'build-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "gsy-dex"\nversion = "0.0.7"\n\n'
        '[tool.setuptools.packages.find]\ninclude = ["gsy_dex*"]\n')
    (source / "gsy_dex" / "__init__.py").write_text("")
    (source / "gsy_dex" / "trade_store" / "__init__.py").write_text("")
    (source / "gsy_dex" / "trade_store" / "market_interface.py").write_text(
        "class SubstrateBlockchainInterface:\n    ORIGIN = 'stand-in gsy-dex'\n")
    python = fresh_venv(root / "venv")
    result = run([python, "-m", "pip", "install", "--quiet", source], cwd=root,
                 env=clean_env())
    assert result.returncode == 0, result.stderr
    return python


def test_the_script_installs_the_plug_in_with_redis_and_nothing_of_pilotchain(
        gsy_e_python: Path, tmp_path: Path) -> None:
    code = ("import json, sys\n"
            "from importlib import metadata\n"
            "from gsy_dex.trade_store.market_interface import SubstrateBlockchainInterface as S\n"
            "bc = S('market', None)\n"
            "print(json.dumps([type(bc).__module__, bc.create_new_offer(1, 2, 'x') != '',\n"
            "      sorted(m for m in ('web3', 'eth_account', 'pilotchain', 'bridge')\n"
            "             if m in sys.modules), metadata.requires('pilotchain-gsy-plugin')]))\n")
    env = {**clean_env(), "REDIS_URL": "redis://127.0.0.1:1/0"}
    result = run([gsy_e_python, "-c", code], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    module, offered, chain_side, requires = json.loads(result.stdout)
    assert (module, offered, chain_side) == ("pilotchain_gsy_plugin", True, [])
    assert len(requires) == 1 and requires[0].replace(" ", "") in {"redis<9,>=5", "redis>=5,<9"}
    names = {name.lower() for name in installed(gsy_e_python, tmp_path)}
    assert {"pilotchain-gsy-plugin", "redis"} <= names
    assert not names & {"pilotchain", "web3", "gsy-dex"}


def test_the_script_refuses_an_environment_with_gsy_dex_and_installs_nothing(
        gsy_dex_python: Path, tmp_path: Path) -> None:
    before = installed(gsy_dex_python, tmp_path)
    assert before.get("gsy-dex") == "0.0.7"
    result = run([INSTALL, gsy_dex_python], cwd=tmp_path, env=clean_env())
    assert result.returncode != 0
    venv = gsy_dex_python.parent.parent
    assert result.stderr.strip() == (f"install-plugin: Refusing to install: {venv} already has "
                                     f"gsy-dex 0.0.7, {REFUSAL}")
    assert installed(gsy_dex_python, tmp_path) == before
    origin = run([gsy_dex_python, "-c", "from gsy_dex.trade_store.market_interface import "
                  "SubstrateBlockchainInterface as S; print(S.ORIGIN)"], cwd=tmp_path)
    assert origin.stdout.strip() == "stand-in gsy-dex", origin.stderr


def test_the_shim_refuses_to_load_next_to_gsy_dex(gsy_dex_python: Path, tmp_path: Path) -> None:
    # The plug-in put in front of gsy-dex on the path, as the gsy-e image once did.
    env = {**clean_env(), "PYTHONPATH": str(PROJECT_ROOT / "plugin")}
    result = run([gsy_dex_python, "-c", "import gsy_dex.trade_store.market_interface"],
                 cwd=tmp_path, env=env)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: PilotChain's gsy-e plug-in (pilotchain-gsy-plugin) "
                           "and Grid Singularity's gsy-dex 0.0.7 ")
    assert SHIM_REFUSAL in last


def test_the_script_refuses_pilotchain_s_own_environment(tmp_path: Path) -> None:
    result = run([INSTALL, PROJECT_ROOT / ".venv" / "bin" / "python"], cwd=tmp_path,
                 env=clean_env())
    assert result.returncode != 0
    assert result.stderr.strip().endswith(
        "is PilotChain's own environment; the plug-in belongs in gsy-e's (give its interpreter)")
    missing = run([INSTALL, tmp_path / "no-python"], cwd=tmp_path, env=clean_env())
    assert missing.returncode != 0
    assert missing.stderr.startswith(f"install-plugin: no Python interpreter "
                                     f"'{tmp_path / 'no-python'}'")


def project_copy(where: Path) -> Path:
    """The working tree's files (tracked or new, not ignored): no stale build/ or egg-info."""
    listing = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                  cwd=PROJECT_ROOT)
    assert listing.returncode == 0, listing.stderr
    for name in filter(None, listing.stdout.split("\0")):
        source = PROJECT_ROOT / name
        if source.is_file():
            (where / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, where / name)
    return where


def test_pilotchain_s_distribution_brings_no_gsy_dex(tmp_path: Path) -> None:
    source = project_copy(tmp_path / "pilotchain")
    # The wheel pip would install.
    result = run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w",
                  tmp_path / "wheels", source], cwd=tmp_path, env=clean_env())
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "wheels").glob("pilotchain-*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {"pilotchain", "bridge", "faucet"} <= tops
    assert not tops & {"gsy_dex", "pilotchain_gsy_plugin"}
    assert "bridge/gsy_plugin.py" not in zipfile.ZipFile(wheel).namelist()
    # An editable install, as a developer makes it, in an environment of its own.
    python = fresh_venv(tmp_path / "venv")
    result = run([python, "-m", "pip", "install", "--quiet", "--no-deps", "-e", source],
                 cwd=tmp_path, env=clean_env())
    assert result.returncode == 0, result.stderr
    code = ("import importlib.util as u\n"
            "print([n for n in ('pilotchain', 'bridge', 'faucet', 'gsy_dex',\n"
            "                   'pilotchain_gsy_plugin') if u.find_spec(n)])")
    found = run([python, "-c", code], cwd=tmp_path, env=clean_env())
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "['pilotchain', 'bridge', 'faucet']"
