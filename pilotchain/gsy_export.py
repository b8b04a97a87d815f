"""gsy-e's own export of a run (``gsy-e run --export-path DIR``), read as trades.

What gsy-e writes, and what that means for reading it back (checked on gsy-e ab358e7):

* ``DIR/<run start>/setup_file.json`` is the area tree, with every area's name and uuid. The
  trade files name parties by **name**, so the tree is what turns them into the uuids the
  chain records; a name used by two areas of a run is refused (its trades could be either's).
* Every area with children is a market. Its files sit in the directory of its parent
  (``grid-trades.csv`` at the top, ``grid/house-1-trades.csv`` below, named by slug):
  ``<slug>-trades.csv`` (spot), ``<slug>-settlement-trades.csv``, ``<slug>-future-trades.csv``,
  and beside each a statistics file (``<slug>.csv``, ``<slug>-settlement.csv``,
  ``<slug>-future.csv``) with a row for every slot of that kind the export covers, with or
  without trades. Columns of a trade row: ``slot``, ``creation_time``, ``rate [ct./kWh]``
  (rounded to 4 decimals), ``energy [kWh]`` (as gsy-e's float prints), ``seller``,
  ``seller origin``, ``buyer``, ``buyer origin``. No trade ids, no price, no fee.
* On every market cycle gsy-e appends every past market it still holds, so a market's rows
  come again and again: each write of a market starts with its first trade and lists its
  trades in creation order, and a later write holds at least what an earlier one did. A
  row is therefore counted as often as it occurs in one write, not in the file. (Two
  trades of one market alike in every exported field, creation time included, cannot be
  told from a rewrite when they are the market's very first: the export cannot say.)
* A settlement market still open when the run ends, and a future market's trades made
  after its slot was exported, are not in the export: :attr:`GsyExport.coverage` says which
  slots of which kind the export covers, so a reader does not take their absence for a gap.
"""

from __future__ import annotations

import csv
import json
import re
import unicodedata
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from pilotchain.errors import PilotChainError
from pilotchain.trades import (
    ENERGY_DECIMALS,
    PRICE_DECIMALS,
    TradeRecord,
    parse_time_slot,
    to_fixed,
)

SETUP_FILE = "setup_file.json"
# A market kind, and the suffixes of its trade and statistics files after the area's slug.
KINDS: dict[str, tuple[str, str]] = {
    "spot": ("-trades.csv", ".csv"),
    "settlement": ("-settlement-trades.csv", "-settlement.csv"),
    "future": ("-future-trades.csv", "-future.csv"),
}
TRADE_COLUMNS = ("slot", "creation_time", "rate [ct./kWh]", "energy [kWh]", "seller",
                 "seller origin", "buyer", "buyer origin")
# The export rounds rates to 4 decimals (after gsy-e's own rounding to 8).
RATE_DECIMALS = 4
# Ids for trades made from export rows (which have none): stable for the same row.
_ROW_NAMESPACE = uuid.UUID("3b0e9f3c-2c55-4b8e-9a53-5f0c2b7d1e40")


class ExportError(PilotChainError):
    """A gsy-e export cannot be read; the message says what and where."""


@dataclass(frozen=True)
class Area:
    name: str
    uuid: uuid.UUID
    path: tuple[str, ...]  # the names from the root down to this area, itself included
    is_market: bool


@dataclass(frozen=True)
class ExportedTrade:
    """One trade of gsy-e's export: parties as uuids, energy at the contract's scale, the
    rate as exported (rounded), and where it came from."""

    market: uuid.UUID
    kind: str
    time_slot: int
    creation_time: str
    rate: Decimal
    energy: int
    seller: uuid.UUID
    seller_origin: uuid.UUID
    buyer: uuid.UUID
    buyer_origin: uuid.UUID
    source: str  # file:line of its first occurrence, the file relative to the run

    def as_record(self, occurrence: int = 0) -> TradeRecord:
        """As a trade record: a made-up id, stable for this row (gsy-e's export has no ids),
        and the price from the rounded rate (good to the export's 4 decimals of a rate)."""
        key = "|".join(str(part) for part in (
            self.market, self.kind, self.time_slot, self.creation_time, self.rate,
            self.energy, self.seller, self.seller_origin, self.buyer, self.buyer_origin,
            occurrence))
        price = to_fixed(self.rate * Decimal(self.energy).scaleb(-ENERGY_DECIMALS),
                         PRICE_DECIMALS)
        return TradeRecord(uuid.uuid5(_ROW_NAMESPACE, key), self.market, self.time_slot,
                           self.seller, self.buyer, self.seller_origin, self.buyer_origin,
                           self.energy, price, 0)


@dataclass
class GsyExport:
    """A run's export: its areas and the trades of every market, each counted once."""

    directory: Path
    areas: dict[uuid.UUID, Area]
    trades: list[ExportedTrade]
    # (market, kind) -> the slots that kind's statistics file lists for the market.
    coverage: dict[tuple[uuid.UUID, str], set[int]] = field(default_factory=dict)
    rewritten_rows: int = 0  # rows left out as gsy-e's rewrites of a market

    @property
    def markets(self) -> dict[uuid.UUID, Area]:
        return {key: area for key, area in self.areas.items() if area.is_market}

    def name_of(self, area: uuid.UUID) -> str:
        found = self.areas.get(area)
        return found.name if found else str(area)

    def covers(self, market: uuid.UUID, time_slot: int) -> bool:
        """Whether every kind of market this area ran has ``time_slot`` in the export."""
        kinds = [slots for (key, _), slots in self.coverage.items() if key == market]
        return bool(kinds) and all(time_slot in slots for slots in kinds)

    def records(self) -> list[TradeRecord]:
        """Every exported trade as a trade record (see :meth:`ExportedTrade.as_record`)."""
        seen: Counter[ExportedTrade] = Counter()
        records = []
        for trade in self.trades:
            records.append(trade.as_record(seen[trade]))
            seen[trade] += 1
        return records


def find_run(path: Path) -> Path:
    """The run directory: ``path`` itself when it holds setup_file.json, else its only
    subdirectory that does (``--export-path`` gets one per run, named by its start)."""
    if not path.is_dir():
        raise ExportError(f"{path} is not a directory; give the directory gsy-e exported the "
                          f"run to (gsy-e run --export-path DIR), or the run's own directory "
                          f"inside it.")
    if (path / SETUP_FILE).is_file():
        return path
    runs = sorted(child for child in path.iterdir() if (child / SETUP_FILE).is_file())
    if not runs:
        raise ExportError(f"{path} holds no gsy-e export: no {SETUP_FILE} in it or in a "
                          f"directory inside it. Run gsy-e with --export-path {path} (and "
                          f"without --no-export).")
    if len(runs) > 1:
        raise ExportError(f"{path} holds the exports of {len(runs)} runs "
                          f"({', '.join(run.name for run in runs)}); give one of them.")
    return runs[0]


def read_export(path: Path) -> GsyExport:
    """Read the export of one gsy-e run (``path``: see :func:`find_run`)."""
    run = find_run(path)
    areas = _areas(run)
    by_name: dict[str, Area] = {}
    for area in areas:
        if area.name in by_name:
            raise ExportError(f"Two areas of the run in {run} are called {area.name!r}; the "
                              f"export names parties by name only, so their trades cannot "
                              f"be told apart.")
        by_name[area.name] = area
    export = GsyExport(run, {area.uuid: area for area in areas}, [])
    for market in (area for area in areas if area.is_market):
        folder = _folder(run, market.path[:-1])
        slug = _slug(market.name)
        for kind, (trades_suffix, stats_suffix) in KINDS.items():
            stats = folder / f"{slug}{stats_suffix}" if folder else None
            if stats is None or not stats.is_file():
                if kind == "spot":
                    raise ExportError(f"The export {run} has no {slug}{stats_suffix} for the "
                                      f"market {market.name!r}; it is not complete (did gsy-e "
                                      f"finish the run?).")
                continue
            export.coverage[(market.uuid, kind)] = _covered_slots(stats)
            trades_file = folder / f"{slug}{trades_suffix}" if folder else None
            if trades_file is None or not trades_file.is_file():
                continue
            rows, rewritten = _rows_once(trades_file)
            export.rewritten_rows += rewritten
            export.trades += [_trade(row, line, trades_file, run, market, kind, by_name)
                              for line, row in rows]
    return export


# --- the area tree ---------------------------------------------------------------------


def _areas(run: Path) -> list[Area]:
    try:
        tree = json.loads((run / SETUP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ExportError(f"Cannot read {run / SETUP_FILE}: {error}.") from None
    areas: list[Area] = []

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if not isinstance(node, dict) or not isinstance(node.get("name"), str):
            raise ExportError(f"{run / SETUP_FILE} is not a gsy-e area tree (an area without "
                              f"a name under {' / '.join(path) or 'the root'}).")
        try:
            area_id = uuid.UUID(str(node.get("uuid")))
        except ValueError:
            raise ExportError(f"{run / SETUP_FILE}: the area {node['name']!r} has no valid "
                              f"uuid ({node.get('uuid')!r}).") from None
        children = node.get("children") or []
        here = (*path, node["name"])
        areas.append(Area(node["name"], area_id, here, bool(children)))
        for child in children:
            walk(child, here)

    walk(tree, ())
    return areas


def _slug(name: str) -> str:
    """gsy-e's slug of an area name (awesome-slugify: ASCII, lower case, runs of anything
    else as one hyphen), as its file names use it."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")


def _folder(run: Path, ancestors: Sequence[str]) -> Path | None:
    """The directory holding the files of a market whose ancestors are ``ancestors``."""
    folder = run
    for name in ancestors:
        folder = folder / _slug(name)
        if not folder.is_dir():
            return None
    return folder


# --- rows ------------------------------------------------------------------------------


def _csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            yield from enumerate(csv.reader(handle), start=1)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ExportError(f"Cannot read {path}: {error}.") from None


def _covered_slots(stats: Path) -> set[int]:
    slots = set()
    for line, row in _csv_rows(stats):
        if line == 1 or not row:
            continue
        slots.add(_slot(row[0], stats, line))
    return slots


def _rows_once(path: Path) -> tuple[list[tuple[int, tuple[str, ...]]], int]:
    """The file's trade rows, each as often as one write of its market holds it (see the
    module docstring), with their line numbers; and how many rows were rewrites."""
    by_slot: dict[str, list[tuple[int, tuple[str, ...]]]] = {}
    total = 0
    for line, row in _csv_rows(path):
        if line == 1:
            if tuple(row) != TRADE_COLUMNS:
                raise ExportError(f"{path} does not have gsy-e's trade columns "
                                  f"({', '.join(TRADE_COLUMNS)}); it has {', '.join(row)}.")
            continue
        if not row:
            continue
        if len(row) != len(TRADE_COLUMNS):
            raise ExportError(f"{path}, line {line}: {len(row)} columns, not "
                              f"{len(TRADE_COLUMNS)}.")
        by_slot.setdefault(row[0], []).append((line, tuple(row)))
        total += 1
    kept: list[tuple[int, tuple[str, ...]]] = []
    for rows in by_slot.values():
        kept += _once(rows)
    kept.sort()
    return kept, total - len(kept)


def _once(rows: Sequence[tuple[int, tuple[str, ...]]]) -> list[tuple[int, tuple[str, ...]]]:
    """One slot's rows of one file: split into writes (a write starts again with the
    market's first trade, or where creation times go back), each row kept as often as the
    write holding it most often has it."""
    first = rows[0][1]
    writes: list[list[tuple[int, tuple[str, ...]]]] = []
    for line, row in rows:
        if not writes or row == first or row[1] < writes[-1][-1][1][1]:
            writes.append([])
        writes[-1].append((line, row))
    most: Counter[tuple[str, ...]] = Counter()
    where: dict[tuple[str, ...], list[int]] = {}
    for write in writes:
        counts = Counter(row for _, row in write)
        for row, count in counts.items():
            if count > most[row]:
                most[row] = count
        for line, row in write:
            where.setdefault(row, []).append(line)
    return [(line, row) for row, count in most.items() for line in where[row][:count]]


def _trade(row: tuple[str, ...], line: int, path: Path, run: Path, market: Area, kind: str,
           by_name: dict[str, Area]) -> ExportedTrade:
    slot, creation, rate, energy, seller, seller_origin, buyer, buyer_origin = row

    def party(name: str, column: str) -> uuid.UUID:
        area = by_name.get(name)
        if area is None:
            raise ExportError(f"{path}, line {line}: the {column} {name!r} is no area of the "
                              f"run ({SETUP_FILE} does not name it).")
        return area.uuid

    try:
        rate_value = Decimal(rate)
        energy_value = to_fixed(Decimal(energy), ENERGY_DECIMALS)
    except (InvalidOperation, ValueError):
        raise ExportError(f"{path}, line {line}: rate {rate!r} and energy {energy!r} must be "
                          f"numbers.") from None
    return ExportedTrade(
        market=market.uuid, kind=kind, time_slot=_slot(slot, path, line),
        creation_time=creation, rate=rate_value, energy=energy_value,
        seller=party(seller, "seller"), seller_origin=party(seller_origin, "seller origin"),
        buyer=party(buyer, "buyer"), buyer_origin=party(buyer_origin, "buyer origin"),
        source=f"{path.relative_to(run)}:{line}")


def _slot(text: str, path: Path, line: int) -> int:
    try:
        return parse_time_slot(text)
    except ValueError:
        raise ExportError(f"{path}, line {line}: {text!r} is not a time slot.") from None
