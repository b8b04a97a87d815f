"""``pilotchain``: the command behind ./scripts/up, down and status, and the chain tools.

The entry point reads the configuration once and passes it down; errors a user can act on
arrive as PilotChainError and are printed as one sentence, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence

from bridge.config import BridgeSettings
from bridge.service import BridgeService
from faucet.config import FaucetSettings
from faucet.service import FaucetService
from pilotchain import governance, stack
from pilotchain.config import ChainSettings, EnvReader, load_environment
from pilotchain.errors import PilotChainError
from pilotchain.localnet import LocalNetwork
from pilotchain.redis_server import RedisService, RedisSettings
from pilotchain.settlement_service import SettlementService


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        env = load_environment()
        settings = ChainSettings.from_env(env)
        args.services = build_services(settings, env)
        return args.handler(settings, args)
    except PilotChainError as error:
        print(f"pilotchain: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pilotchain: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into e.g. `head`, which stopped reading: not an error of ours.
        sys.stderr.close()
        return 0


def build_services(settings: ChainSettings, env: Mapping[str, str]) -> list[stack.Service]:
    """What ./scripts/up runs on top of the chain, in start order, each configured once here."""
    read = EnvReader(env)
    redis_settings = RedisSettings(
        host=read.str("REDIS_HOST", RedisSettings.host),
        port=read.int("REDIS_PORT", RedisSettings.port, minimum=1),
        data_dir=settings.data_dir / "redis",
        url_override=read.optional("REDIS_URL"),
    )
    # Every service talks to the stack's own Redis unless REDIS_URL names another.
    service_env = {**env, "REDIS_URL": redis_settings.url}
    state_dir = settings.data_dir / "pids"
    return [
        SettlementService(settings),
        RedisService(redis_settings, state_dir),
        BridgeService(BridgeSettings.from_env(service_env), service_env, state_dir,
                      settings.data_dir / "logs" / "bridge.log"),
        FaucetService(FaucetSettings.from_env(service_env), state_dir, service_env),
    ]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pilotchain", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[..., int], help_text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.set_defaults(handler=handler)
        return cmd

    init = command("init", cmd_init, "Create missing keys and genesis.json (never overwrites).")
    init.add_argument("--force", action="store_true",
                      help="regenerate every key and genesis.json (a new chain)")
    command("up", cmd_up, "Start the native network and print its endpoints.")
    down = command("down", cmd_down, "Stop every process ./scripts/up started.")
    down.add_argument("--wipe", action="store_true", help="also delete the chain data")
    status = command("status", cmd_status, "Describe the running stack.")
    status.add_argument("--json", action="store_true", help="print one JSON object")

    deploy = command("deploy", cmd_deploy,
                     "Compile and deploy Settlement (operator admin, bridge recorder) unless "
                     "the recorded one is live.")
    deploy.add_argument("--force", action="store_true", help="deploy a new contract anyway")
    signers = command("signers", cmd_signers, "Show the signers and pending votes.")
    propose = command("propose", cmd_propose, "Vote a signer in or out on every validator.")
    propose.add_argument("address")
    verb = propose.add_mutually_exclusive_group(required=True)
    verb.add_argument("--add", dest="authorize", action="store_true")
    verb.add_argument("--remove", dest="authorize", action="store_false")
    discard = command("discard", cmd_discard, "Withdraw the vote on ADDRESS on every validator.")
    discard.add_argument("address")
    for cmd in (signers, propose, discard):
        cmd.add_argument("--ipc", action="append", metavar="PATH",
                         help="a validator's geth.ipc (repeat; default: the native validators)")
    return parser


def cmd_init(settings: ChainSettings, args: argparse.Namespace) -> int:
    created = stack.network(settings).init(force=args.force)
    print(f"created: {', '.join(created)}" if created else "keys and genesis.json already exist")
    return 0


def cmd_up(settings: ChainSettings, args: argparse.Namespace) -> int:
    result = stack.up(settings, args.services,
                      progress=lambda step: print(f"up: {step}", file=sys.stderr, flush=True))
    if not result.started:
        print("PilotChain is already up; nothing changed.")
    else:
        print(f"PilotChain is up: started {', '.join(result.started)}; first sealed block after "
              f"{result.first_block_seconds:.1f} s, RPC node following after "
              f"{result.seconds:.1f} s.")
    print_endpoints(stack.status(settings, args.services))
    return 0


def cmd_down(settings: ChainSettings, args: argparse.Namespace) -> int:
    unclean = stack.down(settings, args.services, wipe=args.wipe)
    if unclean:
        print(f"Stopped; {', '.join(unclean)} had to be killed after not stopping in time.")
    else:
        print("Stopped every PilotChain process." + (" Chain data deleted." if args.wipe else ""))
    return 0


def cmd_status(settings: ChainSettings, args: argparse.Namespace) -> int:
    report = stack.status(settings, args.services)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_endpoints(report)
        for name, node in report["nodes"].items():
            print(f"  {name:<12} {'running' if node['running'] else 'stopped'}")
    return 0 if report["running"] else 3


def print_endpoints(report: dict) -> None:
    rows = [
        ("RPC (HTTP)", report["rpc_url"]),
        ("RPC (WebSocket)", report["ws_url"]),
        ("Chain id", str(report["chain_id"])),
        ("Latest block", str(report["block_number"])),
        ("MetaMask network name", report["network_name"]),
        ("MetaMask RPC URL", report["rpc_url"]),
        ("MetaMask chain id", str(report["chain_id"])),
        ("MetaMask currency symbol", report["currency_symbol"]),
    ]
    for key, label in (("settlement_address", "Settlement contract"),
                       ("faucet_url", "Faucet"), ("bridge_metrics_url", "Bridge metrics"),
                       ("redis_url", "Redis")):
        if report.get(key):
            rows.append((label, str(report[key])))
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")


def validator_endpoints(settings: ChainSettings, ipc: list[str] | None) -> dict[str, str]:
    if ipc:
        return {path: path for path in ipc}
    net = LocalNetwork(settings, settings.geth_bin_dir)
    running = {name: str(net.ipc_path(name)) for name in net.running()
               if name.startswith("validator")}
    if not running:
        raise governance.GovernanceError(
            "No native validator is running; start them with ./scripts/up, or pass --ipc "
            "with each validator's geth.ipc (in Compose: docker compose exec validator1 "
            "geth attach --exec 'clique.getSigners()' /data/geth.ipc)."
        )
    return running


def cmd_deploy(settings: ChainSettings, args: argparse.Namespace) -> int:
    deployment, new = SettlementService(settings).deploy(force=args.force)
    verb = "Deployed" if new else "Already deployed:"
    print(f"{verb} Settlement at {deployment.address} (block {deployment.block_number}); "
          f"ABI {deployment.abi_path}; record {settings.deployment_file}")
    return 0


def cmd_signers(settings: ChainSettings, args: argparse.Namespace) -> int:
    for state in governance.vote_state(validator_endpoints(settings, args.ipc)):
        print(f"{state.validator}: signers {', '.join(state.signers)}")
        for address, authorize in state.proposals.items():
            print(f"  votes to {'add' if authorize else 'remove'} {address}")
    return 0


def cmd_propose(settings: ChainSettings, args: argparse.Namespace) -> int:
    endpoints = validator_endpoints(settings, args.ipc)
    governance.propose(endpoints, args.address, args.authorize)
    print(f"Proposed on {len(endpoints)} validator(s) to {'add' if args.authorize else 'remove'} "
          f"{args.address}; it takes effect once a majority of signers have sealed the vote.")
    return 0


def cmd_discard(settings: ChainSettings, args: argparse.Namespace) -> int:
    endpoints = validator_endpoints(settings, args.ipc)
    governance.discard(endpoints, args.address)
    print(f"Discarded the vote on {args.address} on {len(endpoints)} validator(s).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
