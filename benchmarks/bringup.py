"""Time the bring-up a pilot engineer sees: ``./scripts/up`` to the first sealed block.

    .venv/bin/python benchmarks/bringup.py [--cold-build]

The stack runs on free ports in a temporary directory (a developer's own ``./scripts/up``
is not touched) and is stopped afterwards. ``--cold-build`` also times building geth and
bootnode v1.13.15 from empty Go caches, as on a fresh machine. Targets: first
sealed block within 20 s with geth built, a cold build within 10 minutes.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runner.ports import isolated_stack_env

ROOT = Path(__file__).resolve().parent.parent


def time_up(home: Path) -> tuple[float, float]:
    """Seconds to the first sealed block (as up reports it) and for the whole command."""
    # The same isolated settings tests/test_scripts.py starts its stacks with.
    env = isolated_stack_env(home, os.environ)
    began = time.monotonic()
    try:
        result = subprocess.run([str(ROOT / "scripts/up")], env=env, cwd=ROOT, text=True,
                                capture_output=True, timeout=600, check=False)
        wall = time.monotonic() - began
        if result.returncode != 0:
            raise SystemExit(f"./scripts/up failed:\n{result.stderr}{result.stdout}")
        match = re.search(r"first sealed block after ([\d.]+) s", result.stdout)
        if not match:
            raise SystemExit(f"./scripts/up did not report a sealed block:\n{result.stdout}")
        return float(match.group(1)), wall
    finally:
        subprocess.run([str(ROOT / "scripts/down")], env=env, cwd=ROOT, capture_output=True,
                       timeout=300, check=False)


def time_cold_build(scratch: Path) -> float:
    """Seconds to build geth and bootnode with empty Go module and build caches."""
    env = {**os.environ, "PILOTCHAIN_CACHE": str(scratch / "cache"),
           "GOMODCACHE": str(scratch / "gomod"), "GOCACHE": str(scratch / "gobuild")}
    began = time.monotonic()
    subprocess.run([str(ROOT / "scripts/lib/install-geth.sh")], env=env, check=True,
                   stdout=subprocess.DEVNULL, timeout=1800)
    elapsed = time.monotonic() - began
    # Module caches are written read-only; make them removable.
    subprocess.run(["chmod", "-R", "u+w", str(scratch)], check=False)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold-build", action="store_true",
                        help="also time a geth build from empty Go caches")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bringup-") as tmp:
        sealed, wall = time_up(Path(tmp) / "fresh")
        print(f"fresh stack (new keys and genesis): first sealed block after {sealed:.1f} s, "
              f"./scripts/up returned after {wall:.1f} s (target: first block within 20 s)")
        if args.cold_build:
            seconds = time_cold_build(Path(tmp) / "cold")
            print(f"cold geth build: {seconds / 60:.1f} min (target: within 10 min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
