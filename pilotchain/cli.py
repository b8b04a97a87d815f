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
from pathlib import Path
from typing import Any

from pilotchain import explorer, governance
from pilotchain.audit import audit
from pilotchain.chain import connect
from pilotchain.chainfiles import create_chain_files
from pilotchain.config import ChainSettings
from pilotchain.contract import load_deployment
from pilotchain.deployment import ensure_deployed
from pilotchain.errors import PilotChainError
from pilotchain.gsy_export import read_export
from pilotchain.network_cli import add_network_commands
from pilotchain.operator_cli import add_operator_commands
from pilotchain.reconcile import Reconciliation, chain_trades, reconcile
from pilotchain.settings import load_environment

Handler = Callable[[ChainSettings, Mapping[str, str], argparse.Namespace], int]
Commands = Any  # argparse's private _SubParsersAction


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
    return add_operator_commands(sub, command, group)


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
