"""The chain's own commands: keys and genesis, deployment, signer governance, the operator's.

Every command takes the typed chain settings read once at the edge (:func:`run`) and nothing
of the services above the chain, so a faucet or bridge setting can never break them. The
``pilotchain`` command (``runner.cli``) adds ``up``, ``down``, ``status``, ``config`` and
``replay``. Errors a user can act on arrive as PilotChainError and are printed as one
sentence, without a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any, TextIO, TypeVar

from pilotchain import explorer, governance
from pilotchain import operator as op
from pilotchain.audit import audit
from pilotchain.chain import connect
from pilotchain.chainfiles import create_chain_files
from pilotchain.closing import SlotCloser
from pilotchain.config import ChainSettings
from pilotchain.contract import load_deployment
from pilotchain.deployment import ensure_deployed
from pilotchain.errors import PilotChainError
from pilotchain.gsy_export import read_export
from pilotchain.metering import Rates
from pilotchain.network_cli import add_network_commands
from pilotchain.reconcile import Reconciliation, chain_trades, reconcile
from pilotchain.settings import load_environment

Handler = Callable[[ChainSettings, Mapping[str, str], argparse.Namespace], int]
Commands = Any  # argparse's private _SubParsersAction
T = TypeVar("T")


def main(argv: Sequence[str] | None = None) -> int:
    """The core commands alone (``python -m pilotchain.cli``)."""
    parser, sub = new_parser("pilotchain", __doc__.splitlines()[0])
    add_core_commands(sub)
    return run(parser, argv)


def new_parser(prog: str, description: str) -> tuple[argparse.ArgumentParser, Commands]:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    return parser, parser.add_subparsers(required=True, metavar="COMMAND")


def command(sub: Commands, name: str, handler: Handler, help_text: str
            ) -> argparse.ArgumentParser:
    """Add a subcommand whose ``handler(settings, env, args)`` runs it."""
    cmd: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
    cmd.set_defaults(handler=handler)
    return cmd


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """The edge: parse, read the environment once, run the handler, print errors as sentences."""
    args = parser.parse_args(argv)
    try:
        env = load_environment()
        return int(args.handler(ChainSettings.from_env(env), env, args))
    except PilotChainError as error:
        print(f"{parser.prog}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into e.g. `head`, which stopped reading: not an error of ours.
        sys.stderr.close()
        return 0


def group(sub: Commands, name: str, help_text: str) -> Commands:
    """A command with subcommands (``pilotchain meters register ...``)."""
    parser = sub.add_parser(name, help=help_text, description=help_text)
    return parser.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")


def add_core_commands(sub: Commands) -> dict[str, Commands]:
    """The core commands; returns the command groups others may add to (``meters``)."""
    init = command(sub, "init", cmd_init,
                   "Create missing keys and genesis.json (never overwrites).")
    init.add_argument("--force", action="store_true",
                      help="regenerate every key and genesis.json (a new chain)")
    deploy = command(sub, "deploy", cmd_deploy,
                     "Compile and deploy Settlement (operator admin, bridge recorder) unless "
                     "the recorded one is live.")
    deploy.add_argument("--force", action="store_true", help="deploy a new contract anyway")
    signers = command(sub, "signers", cmd_signers, "Show the signers and pending votes.")
    propose = command(sub, "propose", cmd_propose, "Vote a signer in or out on every validator.")
    propose.add_argument("address")
    verb = propose.add_mutually_exclusive_group(required=True)
    verb.add_argument("--add", dest="authorize", action="store_true")
    verb.add_argument("--remove", dest="authorize", action="store_false")
    discard = command(sub, "discard", cmd_discard,
                      "Withdraw the vote on ADDRESS on every validator.")
    discard.add_argument("address")
    audit_cmd = command(sub, "audit", cmd_audit,
                        "Recompute every trade, bill, balanced slot and statement from the "
                        "chain's events and compare them with the contract; exit 1 on any "
                        "difference.")
    audit_cmd.add_argument("--to-block", type=int, metavar="N",
                           help="audit up to block N (default: the head)")
    audit_cmd.add_argument("--json", action="store_true", help="print one JSON object")
    explorer = group(sub, "explorer", "The block explorer (Blockscout).")
    verify_cmd = command(explorer, "verify", cmd_explorer_verify,
                         "Verify the deployed Settlement's source in Blockscout (standard JSON "
                         "input), unless it is verified already.")
    verify_cmd.add_argument("--explorer-url", metavar="URL",
                            help="where Blockscout's API answers (default: EXPLORER_URL)")
    verify_cmd.add_argument("--timeout", type=float, default=900.0, metavar="SECONDS",
                            help="give up after this long (900: a first start indexes for "
                                 "minutes)")
    reconcile_cmd = command(sub, "reconcile", cmd_reconcile,
                            "Compare a gsy-e run's own export (gsy-e run --export-path DIR) "
                            "with the chain, market by market: trades missing, extra or "
                            "different; exit 1 on any difference.")
    reconcile_cmd.add_argument("export", type=Path, metavar="EXPORT_DIR",
                               help="the run's export: the --export-path directory, or the "
                                    "run's directory inside it")
    reconcile_cmd.add_argument("--csv", type=Path, metavar="FILE",
                               help="write every difference to FILE as CSV ('-': stdout)")
    reconcile_cmd.add_argument("--to-block", type=int, metavar="N",
                               help="read the chain up to block N (default: the head)")
    for cmd in (signers, propose, discard):
        cmd.add_argument("--ipc", action="append", metavar="PATH",
                         help="a validator's geth.ipc (repeat; default: the native validators)")
    add_network_commands(sub, command, group)
    return add_operator_commands(sub)


def value(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type from a parser of operator input: its sentence, exit status 2."""
    def convert(text: str) -> T:
        try:
            return parse(text)
        except op.InvalidInput as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    convert.__name__ = getattr(parse, "__name__", "value").removeprefix("parse_")
    return convert


TIME_HELP = "unix seconds or ISO-8601 (UTC unless an offset is given), on a slot boundary"


def add_operator_commands(sub: Commands) -> dict[str, Commands]:
    """The grid operator's commands, signed with the operator key (KEYS_DIR/operator)."""
    meters = group(sub, "meters", "Meters: register, replace, deactivate, show (and simulate).")
    register = command(meters, "register", cmd_meters_register,
                       "Register a meter of a participant, active from the end of its "
                       "previous meter (the first: from the start).")
    register.add_argument("meter", type=value(op.parse_meter), metavar="METER_ID",
                          help="a uuid or 0x and 64 hex digits")
    register.add_argument("signer", type=value(op.parse_address), metavar="SIGNER_ADDRESS",
                          help="the address of the meter's own signing key")
    register.add_argument("participant", type=value(op.parse_participant),
                          metavar="PARTICIPANT", help="the gsy-e uuid it measures")
    register.add_argument("--home-area", type=value(op.parse_area), metavar="AREA",
                          help="the participant's own area (default: its own uuid, a house)")
    replace = command(meters, "replace", cmd_meters_replace,
                      "End a meter at a slot boundary and start its successor there.")
    replace.add_argument("old", type=value(op.parse_meter), metavar="OLD_METER_ID")
    replace.add_argument("new", type=value(op.parse_meter), metavar="NEW_METER_ID")
    replace.add_argument("signer", type=value(op.parse_address), metavar="NEW_SIGNER_ADDRESS")
    replace.add_argument("--at", type=value(op.parse_time), required=True, metavar="TIME",
                         help=TIME_HELP)
    deactivate = command(meters, "deactivate", cmd_meters_deactivate,
                         "End a meter at a slot boundary; its readings stay.")
    deactivate.add_argument("meter", type=value(op.parse_meter), metavar="METER_ID")
    deactivate.add_argument("--at", type=value(op.parse_time), required=True, metavar="TIME",
                            help=TIME_HELP)
    show = command(meters, "show", cmd_meters_show, "Show a meter, or a participant's meters.")
    which = show.add_mutually_exclusive_group(required=True)
    which.add_argument("meter", nargs="?", type=value(op.parse_meter), metavar="METER_ID")
    which.add_argument("--participant", type=value(op.parse_participant), metavar="PARTICIPANT")

    rates = group(sub, "rates", "Balancing rates: set a change, show the history.")
    set_rates = command(rates, "set", cmd_rates_set,
                        "Set the balancing rates (euro cents per kWh, decimals allowed) from "
                        "a slot on.")
    set_rates.add_argument("--from", dest="from_slot", type=value(op.parse_time), required=True,
                           metavar="TIME", help=TIME_HELP)
    for flag, name in (("--shortfall", "shortfall"), ("--grid-supply", "grid supply"),
                       ("--feed-in", "feed-in")):
        set_rates.add_argument(flag, type=value(partial(op.parse_rate, what=f"{name} rate")),
                               required=flag != "--feed-in",
                               default=0, metavar="CT_PER_KWH",
                               help=f"the {name} rate" + (" (default 0)"
                                                          if flag == "--feed-in" else ""))
    command(rates, "show", cmd_rates_show, "Show every rates change, oldest first.")

    periods = group(sub, "periods", "Billing periods: close, export statements, mark paid.")
    close = command(periods, "close", cmd_periods_close,
                    "Close the next billing period at a past slot boundary.")
    close.add_argument("--end", type=value(op.parse_time), required=True, metavar="TIME",
                       help=TIME_HELP)
    export = command(periods, "statements", cmd_periods_statements,
                     "Every non-empty statement of a closed period (kWh and euro cents, "
                     "exact decimals).")
    export.add_argument("period", type=int, metavar="N")
    export.add_argument("--csv", metavar="FILE", help="write CSV to FILE (- for stdout)")
    paid = command(periods, "paid", cmd_periods_paid,
                   "Mark a participant's statement of a closed period paid.")
    paid.add_argument("period", type=int, metavar="N")
    paid.add_argument("participant", type=value(op.parse_participant), metavar="PARTICIPANT",
                      help="a uuid, 0x and 64 hex digits, or 'operator'")

    slots = group(sub, "slots", "Metered slots: close the due ones.")
    close_slots = command(slots, "close", cmd_slots_close,
                          "Close every due, still-open slot of every metered participant "
                          "(what pilotchain-closer does continuously).")
    close_slots.add_argument("--until", type=value(op.parse_time), metavar="TIME",
                             help="only slots ending by TIME (default: every due slot)")
    timing = command(slots, "timing", cmd_slots_timing,
                     "Show the slot length and the close delay, or change them.")
    timing.add_argument("--length", type=value(op.parse_seconds), metavar="SECONDS",
                        help="slot length; must equal gsy-e's, and is fixed once the first "
                             "meter or rates are set")
    timing.add_argument("--close-delay", type=value(op.parse_seconds), metavar="SECONDS",
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
    rows = [list(op.STATEMENT_COLUMNS), *(op.statement_row(s) for s in found)]
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


def cmd_init(settings: ChainSettings, env: Mapping[str, str], args: argparse.Namespace) -> int:
    nodes = settings.nodes_dir
    has_chain = nodes.is_dir() and any(nodes.iterdir())
    created = create_chain_files(settings, force=args.force, has_chain_data=has_chain)
    print(f"created: {', '.join(created)}" if created else "keys and genesis.json already exist")
    return 0


def validator_endpoints(settings: ChainSettings, ipc: list[str] | None) -> dict[str, str]:
    """The validators to vote on: those given with --ipc, else the native ones listening."""
    if ipc:
        return {path: path for path in ipc}
    sockets = sorted(settings.nodes_dir.glob("validator*/geth.ipc"))
    running = {path.parent.name: str(path) for path in sockets if path.is_socket()}
    if not running:
        raise governance.GovernanceError(
            "No native validator is running; start them with ./scripts/up, or pass --ipc "
            "with each validator's geth.ipc (in Compose: docker compose exec validator1 "
            "geth attach --exec 'clique.getSigners()' /data/geth.ipc)."
        )
    return running


def cmd_audit(settings: ChainSettings, env: Mapping[str, str], args: argparse.Namespace) -> int:
    url = settings.rpc_url
    deployment = load_deployment(settings.deployment_file, chain_id=settings.chain_id)
    report = audit(connect(url), url, deployment, to_block=args.to_block,
                   progress=lambda step: print(f"audit: {step}", file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps({**asdict(report), "ok": report.ok}, indent=2))
    else:
        print(f"Settlement {report.contract}, blocks {report.from_block}-{report.to_block}: "
              f"{report.trades} trades in {report.batches} batches, {report.participants} "
              f"participants; {report.meters} meters, {report.readings} readings, "
              f"{report.slots_balanced} slots balanced, {report.slots_unmetered} unmetered, "
              f"{report.periods} periods closed.")
        for finding in report.findings:
            print(f"  DIFFERENCE ({finding.kind}): {finding.detail}")
        print("The books hold: every trade once, every bill, balanced slot, balancing and "
              "statement as the events say, receivable = payable." if report.ok
              else f"{len(report.findings)} difference(s) found.")
    return 0 if report.ok else 1


def cmd_explorer_verify(settings: ChainSettings, env: Mapping[str, str],
                        args: argparse.Namespace) -> int:
    url = settings.rpc_url
    deployment = load_deployment(settings.deployment_file, chain_id=settings.chain_id)
    build_dir = deployment.abi_path.parent
    api_url = args.explorer_url or settings.explorer_url
    if not api_url:
        raise PilotChainError("No explorer to verify in: set EXPLORER_URL (where Blockscout's "
                              "API answers) or give --explorer-url.")
    request = explorer.verification_request(
        api_url, deployment.address, build_dir,
        explorer.constructor_args(connect(url), url, deployment, build_dir))
    print(explorer.verify(api_url, request, deployment.address, timeout=args.timeout,
                          progress=lambda step: print(f"explorer: {step}", file=sys.stderr,
                                                      flush=True)))
    return 0


def cmd_reconcile(settings: ChainSettings, env: Mapping[str, str],
                  args: argparse.Namespace) -> int:
    export = read_export(args.export)
    url = settings.rpc_url
    deployment = load_deployment(settings.deployment_file, chain_id=settings.chain_id)
    chain = chain_trades(connect(url), url, deployment, to_block=args.to_block,
                         progress=lambda step: print(f"reconcile: {step}", file=sys.stderr,
                                                     flush=True))
    result = reconcile(export, chain)
    if args.csv is not None:
        write_differences(result, args.csv)
    if str(args.csv) != "-":
        print_reconciliation(result, deployment.address)
    return 0 if result.ok else 1


def print_reconciliation(result: Reconciliation, contract: str) -> None:
    columns = ("exported", "on_chain", "matched", "missing", "extra", "different",
               "not_exported")
    headers = ("market", "gsy-e", "chain", "matched", "missing", "extra", "different",
               "not exported")
    rows = [(tally.name, *(str(getattr(tally, c)) for c in columns)) for tally in result.markets]
    rows.append(("all markets", *(str(result.total(c)) for c in columns)))
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    print(f"gsy-e run {result.run} against Settlement {contract}:")
    for row in [headers, *rows]:
        print("  " + "  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i])
                               for i, cell in enumerate(row)))
    for difference in result.differences[:20]:
        where = difference.exported or f"trade {difference.trade_id}"
        print(f"  {difference.kind.upper()} {difference.market}, slot {difference.time_slot} "
              f"({where}): {difference.detail}")
    if len(result.differences) > 20:
        print(f"  ... and {len(result.differences) - 20} more (--csv FILE lists every one)")
    if result.total("not_exported"):
        print(f"{result.total('not_exported')} trade(s) on chain are of slots gsy-e's export "
              "does not cover (a settlement market still open when the run ended); not "
              "counted as differences.")
    print("The chain holds exactly gsy-e's books for this run." if result.ok
          else f"{len(result.differences)} difference(s) between gsy-e's books and the chain.")


def write_differences(result: Reconciliation, path: Path) -> None:
    fields = ("kind", "market", "time_slot", "detail", "exported", "trade_id")
    try:
        with (contextlib.nullcontext(sys.stdout) if str(path) == "-"
              else path.open("w", newline="", encoding="utf-8")) as out:
            writer = csv.writer(out)
            writer.writerow(fields)
            for difference in result.differences:
                writer.writerow([getattr(difference, name) for name in fields])
    except OSError as error:
        raise PilotChainError(f"Cannot write {path}: {error.strerror}.") from None


def cmd_deploy(settings: ChainSettings, env: Mapping[str, str], args: argparse.Namespace) -> int:
    deployment, new = ensure_deployed(settings, force=args.force)
    verb = "Deployed" if new else "Already deployed:"
    print(f"{verb} Settlement at {deployment.address} (block {deployment.block_number}); "
          f"ABI {deployment.abi_path}; record {settings.deployment_file}")
    return 0


def cmd_signers(settings: ChainSettings, env: Mapping[str, str],
                args: argparse.Namespace) -> int:
    for state in governance.vote_state(validator_endpoints(settings, args.ipc)):
        print(f"{state.validator}: signers {', '.join(state.signers)}")
        for address, authorize in state.proposals.items():
            print(f"  votes to {'add' if authorize else 'remove'} {address}")
    return 0


def cmd_propose(settings: ChainSettings, env: Mapping[str, str],
                args: argparse.Namespace) -> int:
    endpoints = validator_endpoints(settings, args.ipc)
    governance.propose(endpoints, args.address, args.authorize)
    first = dict(list(endpoints.items())[:1])  # one validator's view of the signers is enough
    signers = len(governance.vote_state(first)[0].signers)
    print(f"Proposed on {len(endpoints)} validator(s) to {'add' if args.authorize else 'remove'} "
          f"{args.address}. A signer's vote counts once it seals a block carrying it; the vote "
          f"passes when {signers // 2 + 1} of the {signers} signers have voted ('pilotchain "
          "network status' shows the votes cast).")
    return 0


def cmd_discard(settings: ChainSettings, env: Mapping[str, str],
                args: argparse.Namespace) -> int:
    endpoints = validator_endpoints(settings, args.ipc)
    governance.discard(endpoints, args.address)
    print(f"Discarded the vote on {args.address} on {len(endpoints)} validator(s).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
