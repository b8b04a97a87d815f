"""The meters' MQTT broker for the native stack and the tests: Debian's mosquitto,
authenticated, durable.

No anonymous access. The ingest's account reads every meter's topic, the monitor's only
connects (health checks), and each meter has an account of its own, named by its id, that may
publish on its own topic only (``pattern write`` with ``%u``). Every client id is replaced by
the client's account name (``use_username_as_clientid``), so nobody can take over the
ingest's persistent session, or a meter's, by choosing its client id. The password file is
written at each start (and on :meth:`MqttService.reload`) from the passwords ``pilotchain
init`` generated and the meters' hashed accounts, in the broker's data directory, never in
git. Messages queued for the ingest's session survive a broker restart (persistence on).
"""

from __future__ import annotations

import getpass
import os
import secrets
import shutil
import signal
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from pilotchain.config import MONITOR_USERNAME, MqttConnection
from pilotchain.meter_accounts import MeterAccounts, mosquitto_hash
from runner.localnet import LocalNetwork
from runner.ports import free_port
from runner.services import BackgroundService, ServiceError


def private_mqtt(meter_accounts: Path | None = None) -> MqttConnection:
    """A broker of its own for a test or a benchmark: a free port and fresh passwords."""
    return MqttConnection(port=free_port(), password=secrets.token_hex(16),
                          monitor_password=secrets.token_hex(16), meter_accounts=meter_accounts)


def _binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if found is None:
        raise ServiceError(f"{name} is not installed; run ./scripts/up (it installs Debian's "
                           "mosquitto).")
    return found


class MqttService(BackgroundService):
    """mosquitto in the background, listening on MQTT_HOST:MQTT_PORT."""

    name = "mqtt"
    start_timeout = 30.0
    others_need_it = True

    def __init__(self, connection: MqttConnection, data_dir: Path, state_dir: Path) -> None:
        super().__init__(state_dir, {"PATH": "/usr/sbin:/usr/bin:/bin"},
                         port=(connection.host, connection.port, "MQTT_PORT"))
        self.connection = connection
        self.data_dir = data_dir.resolve()
        self.marker = str(self.data_dir)
        self.cwd = self.data_dir

    def argv(self) -> list[str]:
        return [_binary("mosquitto"), "-c", str(self._write_config())]

    def _write_config(self) -> Path:
        c = self.connection
        if not c.password or not c.monitor_password:
            raise ServiceError("The MQTT passwords are missing; run 'pilotchain init' (or "
                               "./scripts/up) to generate them.")
        self._write_accounts()
        config = self.data_dir / "mosquitto.conf"
        (self.data_dir / "db").mkdir(exist_ok=True)
        config.write_text(
            f"listener {c.port} {c.host}\n"
            "allow_anonymous false\n"
            # The client id is the account: nobody takes over the ingest's session (and the
            # readings the broker holds for it) or a meter's by choosing its client id.
            "use_username_as_clientid true\n"
            f"password_file {self.data_dir / 'passwd'}\n"
            f"acl_file {self.data_dir / 'acl'}\n"
            "persistence true\n"
            f"persistence_location {self.data_dir / 'db'}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 1000000\n"
            # A reading is about 350 bytes; the broker drops anything past 64 KiB instead of
            # handing it on (QoS 1 still completes), so no meter makes the subscriber parse
            # megabytes.
            "message_size_limit 65536\n"
            "log_dest stdout\n"
            # mosquitto started as root drops to the user 'mosquitto', who cannot read our
            # private files; stay the user who started it.
            f"user {getpass.getuser()}\n")
        return config

    def _write_accounts(self) -> None:
        """The password file (service accounts hashed here, the meters' as issued) and the
        access list, each written beside and renamed over (a reload never reads half)."""
        c = self.connection
        lines = [f"{user}:{mosquitto_hash(password)}\n" for user, password in
                 ((c.username, c.password), (MONITOR_USERNAME, c.monitor_password)) if password]
        meters = MeterAccounts(c.meter_accounts).text() if c.meter_accounts else ""
        reads = c.topic.split("+", 1)[0] + "#"
        acl = (f"user {c.username}\ntopic read {reads}\n\n"
               # The monitor reads a topic nobody writes; each meter writes its own topic.
               f"user {MONITOR_USERNAME}\ntopic read pilotchain/health\n\n"
               f"pattern write {c.meters_pattern}\n")
        for name, text in (("passwd", "".join(lines) + meters), ("acl", acl)):
            partial = self.data_dir / f"{name}.partial"
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            os.replace(partial, self.data_dir / name)

    def reload(self) -> bool:
        """Take the meters' accounts as they are now (issued or revoked since the start):
        rewrite the password file and signal the broker to read it. False if not running."""
        pid = self.process.pid
        if not self.process.is_running() or pid is None:
            return False
        self._write_accounts()
        os.kill(pid, signal.SIGHUP)
        return True

    def process_env(self, net: LocalNetwork | None) -> dict[str, str]:
        return dict(self.env)

    def launch(self, net: LocalNetwork | None = None) -> bool:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        return super().launch(net)

    def probe(self) -> bool:
        """Ready once the monitor's account can connect."""
        return connect_check(self.connection) == 0

    def status(self) -> dict[str, Any]:
        return {"mqtt_url": self.connection.url}


def connect_check(connection: MqttConnection, username: str = MONITOR_USERNAME,
                  password: str | None = None) -> int | None:
    """The broker's CONNACK code for an account (0 accepted; by default the monitor's),
    None if unreachable. Never the ingest's account: its client id is the subscriber's."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    if password is None and username == MONITOR_USERNAME:
        password = connection.monitor_password
    client.username_pw_set(username, password)
    try:
        client.connect(connection.host, connection.port, keepalive=5)
    except OSError:
        return None
    try:
        for _ in range(50):
            client.loop(timeout=0.1)
            if client.is_connected():
                return 0
        return 1
    finally:
        client.disconnect()
