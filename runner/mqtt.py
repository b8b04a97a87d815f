"""The meters' MQTT broker for the native stack and the tests: Debian's mosquitto,
authenticated, durable.

No anonymous access: two accounts (the ingest reads every meter's topic, the meters publish
on it) whose passwords ``pilotchain init`` generated; the password file is made from them with
``mosquitto_passwd`` at each start, in the broker's data directory, never in git. Messages
queued for the ingest's persistent session survive a broker restart (persistence on).
"""

from __future__ import annotations

import getpass
import os
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from pilotchain.config import MqttConnection
from runner.localnet import LocalNetwork
from runner.ports import free_port
from runner.services import BackgroundService, ServiceError


def private_mqtt() -> MqttConnection:
    """A broker of its own for a test or a benchmark: a free port and fresh passwords."""
    return MqttConnection(port=free_port(), password=secrets.token_hex(16),
                          meter_password=secrets.token_hex(16))


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
        if not c.password or not c.meter_password:
            raise ServiceError("The MQTT passwords are missing; run 'pilotchain init' (or "
                               "./scripts/up) to generate them.")
        passwords = self.data_dir / "passwd"
        passwords.unlink(missing_ok=True)
        for user, password in ((c.username, c.password), (c.meter_username, c.meter_password)):
            # -b takes the password as an argument: only for the moment the file is written.
            subprocess.run([_binary("mosquitto_passwd"), "-b", *(["-c"] if not
                            passwords.exists() else []), str(passwords), user, password],
                           check=True, capture_output=True, timeout=30)
        os.chmod(passwords, 0o600)
        acl = self.data_dir / "acl"
        pattern = c.topic
        reads = pattern.split("+", 1)[0] + "#" if "+" in pattern else pattern
        acl.write_text(f"user {c.username}\ntopic read {reads}\n\n"
                       f"user {c.meter_username}\ntopic write {pattern}\n")
        config = self.data_dir / "mosquitto.conf"
        (self.data_dir / "db").mkdir(exist_ok=True)
        config.write_text(
            f"listener {c.port} {c.host}\n"
            "allow_anonymous false\n"
            f"password_file {passwords}\n"
            f"acl_file {acl}\n"
            "persistence true\n"
            f"persistence_location {self.data_dir / 'db'}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 1000000\n"
            "log_dest stdout\n"
            # mosquitto started as root drops to the user 'mosquitto', who cannot read our
            # private files; stay the user who started it.
            f"user {getpass.getuser()}\n")
        return config

    def process_env(self, net: LocalNetwork | None) -> dict[str, str]:
        return dict(self.env)

    def start(self, net: LocalNetwork | None = None) -> bool:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        return super().start(net)

    def probe(self) -> bool:
        """Ready once the ingest's account can connect."""
        return connect_check(self.connection) == 0

    def status(self) -> dict[str, Any]:
        return {"mqtt_url": self.connection.url}


def connect_check(connection: MqttConnection) -> int | None:
    """The broker's CONNACK code for the ingest's account (0 accepted), None if unreachable."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.username_pw_set(connection.username, connection.password)
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
