"""The grid operator's commands: ``pilotchain meters|rates|periods|slots ...``.

Each value is checked by its parser (:mod:`pilotchain.operator_input`) while the command line
is read, so a malformed id, address, time or rate stops with its sentence and exit status 2
before anything touches the chain; the handlers then call the chain side
(:mod:`pilotchain.operator`) with typed values and print what it did.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, TextIO, TypeVar

from pilotchain import operator as op
from pilotchain import operator_input as given
from pilotchain.closing import SlotCloser
from pilotchain.config import ChainSettings
from pilotchain.metering import Rates

T = TypeVar("T")
Commands = Any  # argparse's private _SubParsersAction
Handler = Callable[[ChainSettings, Mapping[str, str], argparse.Namespace], int]
Command = Callable[[Commands, str, Handler, str], argparse.ArgumentParser]
Group = Callable[[Commands, str, str], Commands]


def value(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type from a parser of operator input: its sentence, exit status 2."""
    def convert(text: str) -> T:
        try:
            return parse(text)
        except given.InvalidInput as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    convert.__name__ = getattr(parse, "__name__", "value").removeprefix("parse_")
    return convert


TIME_HELP = "unix seconds or ISO-8601 (UTC unless an offset is given), on a slot boundary"


def add_operator_commands(sub: Commands, command: Command, group: Group
                          ) -> dict[str, Commands]:
    """The grid operator's commands, signed with the operator key (KEYS_DIR/operator)."""
    meters = group(sub, "meters", "Meters: register, replace, deactivate, show (and simulate).")
    register = command(meters, "register", cmd_meters_register,
                       "Register a meter of a participant, active from the end of its "
                       "previous meter (the first: from the start).")
    register.add_argument("meter", type=value(given.parse_meter), metavar="METER_ID",
                          help="a uuid or 0x and 64 hex digits")
    register.add_argument("signer", type=value(given.parse_address), metavar="SIGNER_ADDRESS",
                          help="the address of the meter's own signing key")
    register.add_argument("participant", type=value(given.parse_participant),
                          metavar="PARTICIPANT", help="the gsy-e uuid it measures")
    register.add_argument("--home-area", type=value(given.parse_area), metavar="AREA",
                          help="the participant's own area (default: its own uuid, a house)")
    replace = command(meters, "replace", cmd_meters_replace,
                      "End a meter at a slot boundary and start its successor there.")
    replace.add_argument("old", type=value(given.parse_meter), metavar="OLD_METER_ID")
    replace.add_argument("new", type=value(given.parse_meter), metavar="NEW_METER_ID")
    replace.add_argument("signer", type=value(given.parse_address), metavar="NEW_SIGNER_ADDRESS")
    replace.add_argument("--at", type=value(given.parse_time), required=True, metavar="TIME",
                         help=TIME_HELP)
    deactivate = command(meters, "deactivate", cmd_meters_deactivate,
                         "End a meter at a slot boundary; its readings stay.")
    deactivate.add_argument("meter", type=value(given.parse_meter), metavar="METER_ID")
    deactivate.add_argument("--at", type=value(given.parse_time), required=True, metavar="TIME",
                            help=TIME_HELP)
    show = command(meters, "show", cmd_meters_show, "Show a meter, or a participant's meters.")
    which = show.add_mutually_exclusive_group(required=True)
    which.add_argument("meter", nargs="?", type=value(given.parse_meter), metavar="METER_ID")
    which.add_argument("--participant", type=value(given.parse_participant), metavar="PARTICIPANT")

    rates = group(sub, "rates", "Balancing rates: set a change, show the history.")
    set_rates = command(rates, "set", cmd_rates_set,
                        "Set the balancing rates (euro cents per kWh, decimals allowed) from "
                        "a slot on.")
    set_rates.add_argument("--from", dest="from_slot", type=value(given.parse_time), required=True,
                           metavar="TIME", help=TIME_HELP)
    for flag, name in (("--shortfall", "shortfall"), ("--grid-supply", "grid supply"),
                       ("--feed-in", "feed-in")):
        set_rates.add_argument(flag, type=value(partial(given.parse_rate, what=f"{name} rate")),
                               required=flag != "--feed-in",
                               default=0, metavar="CT_PER_KWH",
                               help=f"the {name} rate" + (" (default 0)"
                                                          if flag == "--feed-in" else ""))
    command(rates, "show", cmd_rates_show, "Show every rates change, oldest first.")

    periods = group(sub, "periods", "Billing periods: close, export statements, mark paid.")
    close = command(periods, "close", cmd_periods_close,
                    "Close the next billing period at a past slot boundary.")
    close.add_argument("--end", type=value(given.parse_time), required=True, metavar="TIME",
                       help=TIME_HELP)
    export = command(periods, "statements", cmd_periods_statements,
                     "Every non-empty statement of a closed period (kWh and euro cents, "
                     "exact decimals).")
    export.add_argument("period", type=int, metavar="N")
    export.add_argument("--csv", metavar="FILE", help="write CSV to FILE (- for stdout)")
    paid = command(periods, "paid", cmd_periods_paid,
                   "Mark a participant's statement of a closed period paid.")
    paid.add_argument("period", type=int, metavar="N")
    paid.add_argument("participant", type=value(given.parse_participant), metavar="PARTICIPANT",
                      help="a uuid, 0x and 64 hex digits, or 'operator'")

    slots = group(sub, "slots", "Metered slots: close the due ones.")
    close_slots = command(slots, "close", cmd_slots_close,
                          "Close every due, still-open slot of every metered participant "
                          "(what pilotchain-closer does continuously).")
    close_slots.add_argument("--until", type=value(given.parse_time), metavar="TIME",
                             help="only slots ending by TIME (default: every due slot)")
    timing = command(slots, "timing", cmd_slots_timing,
                     "Show the slot length and the close delay, or change them.")
    timing.add_argument("--length", type=value(given.parse_seconds), metavar="SECONDS",
                        help="slot length; must equal gsy-e's, and is fixed once the first "
                             "meter or rates are set")
    timing.add_argument("--close-delay", type=value(given.parse_seconds), metavar="SECONDS",
                        help="how long after a slot's end it may be closed (late readings and "
                             "gsy-e's settlement market, open for an hour after the slot, "
                             "must fit in it)")
    return {"meters": meters}


def cmd_meters_register(settings: ChainSettings, env: Mapping[str, str],
                        args: argparse.Namespace) -> int:
    client = op.SettlementClient.open(settings)
    info = op.register_meter(client, args.meter, args.signer, args.participant, args.home_area)
    print(f"Registered {info.describe()}.")
    return 0


def cmd_meters_replace(settings: ChainSettings, env: Mapping[str, str],
                       args: argparse.Namespace) -> int:
    client = op.SettlementClient.open(settings)
    info = op.replace_meter(client, args.old, args.new, args.signer, args.at)
    print(f"Replaced meter {op.format_id(args.old)} at {op.format_time(args.at)} by "
          f"{info.describe()}.")
    return 0


def cmd_meters_deactivate(settings: ChainSettings, env: Mapping[str, str],
                          args: argparse.Namespace) -> int:
    client = op.SettlementClient.open(settings)
    info = op.deactivate_meter(client, args.meter, args.at)
    print(f"Deactivated {info.describe()}.")
    return 0


def cmd_meters_show(settings: ChainSettings, env: Mapping[str, str],
                    args: argparse.Namespace) -> int:
    client = op.SettlementClient.open(settings)
    if args.meter is not None:
        print(op.meter_info(client, args.meter).describe())
        return 0
    found = op.meters_of(client, args.participant)
    if not found:
        raise op.OperatorError(f"Participant {op.format_id(args.participant)} has no meter.")
    for info in found:
        print(info.describe())
    return 0


def cmd_rates_set(settings: ChainSettings, env: Mapping[str, str],
                  args: argparse.Namespace) -> int:
    client = op.SettlementClient.open(settings)
    rates = op.set_rates(client, Rates(args.from_slot, args.shortfall, args.grid_supply,
                                       args.feed_in))
    print(f"Rates set {op.describe_rates(rates)}.")
    return 0


def cmd_rates_show(settings: ChainSettings, env: Mapping[str, str],
                   args: argparse.Namespace) -> int:
    history = op.rates_history(op.SettlementClient.open(settings))
    if not history:
        print("No rates are set: every balancing rate is 0.")
    for rates in history:
        print(op.describe_rates(rates))
    return 0


def cmd_periods_close(settings: ChainSettings, env: Mapping[str, str],
                      args: argparse.Namespace) -> int:
    period, block = op.close_period(op.SettlementClient.open(settings), args.end)
    print(f"Closed period {period} at {op.format_time(args.end)} (block {block}): its "
          "statements hold everything recorded since the previous period was closed.")
    return 0


def cmd_periods_statements(settings: ChainSettings, env: Mapping[str, str],
                           args: argparse.Namespace) -> int:
    client = op.SettlementClient.open(settings)
    found = op.statements(client, args.period)
    rows = [list(STATEMENT_COLUMNS), *(statement_row(s) for s in found)]
    if args.csv == "-":
        write_csv(sys.stdout, rows)
        return 0
    if args.csv:
        try:
            with Path(args.csv).open("w", newline="", encoding="utf-8") as handle:
                write_csv(handle, rows)
        except OSError as error:
            raise op.OperatorError(f"Cannot write {args.csv}: {error.strerror}.") from None
        print(f"Wrote {len(found)} statements of period {args.period} to {args.csv}.")
        return 0
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.rjust(width) if i else cell.ljust(width)
                        for i, (cell, width) in enumerate(zip(row, widths, strict=True))))
    print(f"{len(found)} statements of period {args.period} (kWh and euro cents).")
    return 0


def write_csv(handle: TextIO, rows: list[list[str]]) -> None:
    csv.writer(handle, lineterminator="\n").writerows(rows)


def cmd_periods_paid(settings: ChainSettings, env: Mapping[str, str],
                     args: argparse.Namespace) -> int:
    op.mark_paid(op.SettlementClient.open(settings), args.period, args.participant)
    print(f"Marked the statement of {op.format_id(args.participant)} for period "
          f"{args.period} paid.")
    return 0


def cmd_slots_close(settings: ChainSettings, env: Mapping[str, str],
                    args: argparse.Namespace) -> int:
    client = op.SettlementClient.open(settings)
    result = SlotCloser(client, client.sender).close_all(args.until)
    if not result.closed:
        print("No slot was due and open; nothing sent.")
    else:
        print(f"Closed {result.closed} slots: {result.balanced} balanced, {result.unmetered} "
              f"unmetered, in {result.transactions} transaction(s).")
    return 0


def cmd_slots_timing(settings: ChainSettings, env: Mapping[str, str],
                     args: argparse.Namespace) -> int:
    client = op.SettlementClient.open(settings)
    if args.length is None and args.close_delay is None:
        print(f"Settlement has {op.slot_timing(client).describe()}.")
        return 0
    timing = op.set_slot_timing(client, args.length, args.close_delay)
    print(f"Settlement now has {timing.describe()}.")
    return 0


# The CSV columns: kWh and euro cents as exact decimals.
STATEMENT_COLUMNS = ("participant", "energy_sold_kwh", "energy_bought_kwh",
                     "money_receivable_ct", "money_payable_ct", "balancing_charges_ct",
                     "balancing_credits_ct", "net_ct", "paid")


def statement_row(statement: op.Statement) -> list[str]:
    s = statement
    return [op.format_id(s.participant), op.units(s.energy_sold), op.units(s.energy_bought),
            op.units(s.money_receivable), op.units(s.money_payable), op.units(s.balancing_charges),
            op.units(s.balancing_credits), op.units(s.net), "yes" if s.paid else "no"]
