"""The chain's own commands: keys and genesis, deployment, signer governance.

Every command takes the typed chain settings read once at the edge (:func:`run`) and nothing
of the services above the chain, so a faucet or bridge setting can never break them. The
``pilotchain`` command (``runner.cli``) adds ``up``, ``down``, ``status``, ``config`` and
``replay``. Errors a user can act on arrive as PilotChainError and are printed as one
sentence, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from pilotchain import governance
from pilotchain.audit import audit
from pilotchain.chain import connect
from pilotchain.chainfiles import create_chain_files
from pilotchain.config import ChainSettings
from pilotchain.contract import load_deployment
from pilotchain.deployment import ensure_deployed
from pilotchain.errors import PilotChainError
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


def add_core_commands(sub: Commands) -> None:
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
    for cmd in (signers, propose, discard):
        cmd.add_argument("--ipc", action="append", metavar="PATH",
                         help="a validator's geth.ipc (repeat; default: the native validators)")


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
    print(f"Proposed on {len(endpoints)} validator(s) to {'add' if args.authorize else 'remove'} "
          f"{args.address}; it takes effect once a majority of signers have sealed the vote.")
    return 0


def cmd_discard(settings: ChainSettings, env: Mapping[str, str],
                args: argparse.Namespace) -> int:
    endpoints = validator_endpoints(settings, args.ipc)
    governance.discard(endpoints, args.address)
    print(f"Discarded the vote on {args.address} on {len(endpoints)} validator(s).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
