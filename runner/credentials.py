"""The operator's credentials for the meter ingest: each meter's MQTT account, and the
uploader credentials of the HTTP endpoint. The commands are in ``runner.cli``.

Meters get their MQTT account when registered; ``pilotchain meters mqtt-password`` gives one
a new password, or (``--registered``) every registered meter lacking an account one, which is
how a pilot from before per-meter accounts moves its meters off the shared account. The native
broker is told at once (SIGHUP); Compose's notices the file changed within seconds
(docker/mosquitto/start.sh).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pilotchain import operator as op
from pilotchain.chain import call
from pilotchain.config import ChainSettings, MqttConnection
from pilotchain.events import METER_REGISTERED
from pilotchain.meter_accounts import MeterAccounts, account_name
from runner.mqtt import MqttService


def meter_accounts(env: Mapping[str, str]) -> MeterAccounts:
    connection = MqttConnection.from_env(env)
    assert connection.meter_accounts is not None  # from_env always names the file
    return MeterAccounts(connection.meter_accounts)


def reload_broker(settings: ChainSettings, env: Mapping[str, str]) -> bool:
    """Have the native stack's broker take the meters' accounts as they are now; False if
    it does not run here (Compose's broker notices the change by itself)."""
    service = MqttService(MqttConnection.from_env(env), settings.data_dir / "mosquitto",
                          settings.data_dir / "pids")
    return service.reload()


def registered_meters(settings: ChainSettings) -> list[bytes]:
    """Every meter ever registered in the deployed Settlement, in registration order."""
    client = op.SettlementClient.open(settings)
    head = call(client.url, "Reading the block number", lambda: client.w3.eth.block_number)
    logs = client.logs([METER_REGISTERED.topic], 0, head)
    return list(dict.fromkeys(bytes(log["topics"][1]) for log in logs))


def write_private(path: Path, text: str) -> None:
    """A file only its owner reads (passwords to hand to meters)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def handover(passwords: Mapping[bytes, str], connection: MqttConnection) -> str:
    """The lines an installer needs per meter: account, password, topic (CSV)."""
    rows = ["account,password,topic"]
    rows += [f"{account_name(meter)},{password},{connection.topic_for(account_name(meter))}"
             for meter, password in passwords.items()]
    return "\n".join(rows) + "\n"
