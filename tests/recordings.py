"""The trade events the tests replay, recorded from real gsy-e runs (see data/README.md)."""

from pathlib import Path

DATA = Path(__file__).parent / "data"
RECORDINGS = sorted(DATA.glob("*.jsonl"))
