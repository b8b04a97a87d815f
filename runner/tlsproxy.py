"""The RPC node's HTTPS proxy for participants: Debian's nginx in front of geth's HTTP and
WebSocket, which listen on loopback only.

Started with the RPC node when ``RPC_TLS_CERT_FILE`` is set. It serves JSON-RPC at ``/`` and
the WebSocket at ``/ws``; plain HTTP on its port gets nginx's 400, and geth's own ports are
not reachable from outside. It forwards ``Host: localhost`` so geth's virtual-host check
passes whatever name participants use.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from typing import Any

from pilotchain.config import ChainSettings
from runner.localnet import LocalNetwork
from runner.services import BackgroundService, ServiceError

# JSON-RPC batches can be large (geth accepts 5 MB); the proxy takes what geth takes.
MAX_BODY = "5m"
CONFIG_NAME = "nginx.conf"


def write_config(settings: ChainSettings, home: Path) -> Path:
    """Write the proxy's nginx configuration into ``home`` from the RPC_TLS_* settings and the
    RPC node's ports; return its path. The native proxy and the Compose one (in the RPC node's
    network namespace, docker-compose.hosts.yml) run this same configuration."""
    s = settings
    for setting, path in (("RPC_TLS_CERT_FILE", s.tls_cert_file),
                          ("RPC_TLS_KEY_FILE", s.tls_key_file)):
        if path is None or not path.is_file():
            raise ServiceError(f"{setting} names {path}, which does not exist; give the "
                               "RPC node's certificate and key (PEM).")
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    backend = f"{s.host}:{s.rpc_port}"
    listen = f"[{s.tls_addr}]:{s.tls_port}" if ":" in s.tls_addr else \
        f"{s.tls_addr}:{s.tls_port}"
    temp = " ".join(f"{kind}_temp_path {home / kind};"
                    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    config = home / CONFIG_NAME
    config.write_text(f"""\
# Written by ./scripts/up --role rpc (in Compose: the rpc-check service) from the RPC_TLS_*
# settings; changes here are overwritten.
daemon off;
worker_processes 1;
pid {home / "nginx.pid"};
error_log stderr notice;
events {{ worker_connections 1024; }}
http {{
    access_log /dev/stdout;
    server_tokens off;
    {temp}
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen {listen} ssl;
        ssl_certificate {s.tls_cert_file};
        ssl_certificate_key {s.tls_key_file};
        ssl_protocols TLSv1.2 TLSv1.3;
        client_max_body_size {MAX_BODY};
        location = /ws {{
            proxy_pass http://{s.host}:{s.ws_port};
            proxy_http_version 1.1;
            proxy_set_header Host localhost;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 1h;
        }}
        location / {{
            proxy_pass http://{backend};
            proxy_http_version 1.1;
            proxy_set_header Host localhost;
        }}
    }}
}}
""")
    return config


class TlsProxyService(BackgroundService):
    """nginx, in the foreground, with its configuration, pid and temp files in its own
    directory (so it needs no root unless the port is below 1024)."""

    name = "rpc-proxy"
    start_timeout = 30.0

    def __init__(self, settings: ChainSettings, home: Path, state_dir: Path) -> None:
        super().__init__(state_dir, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                         port=(settings.tls_addr, settings.tls_port, "RPC_TLS_PORT"))
        self.settings = settings
        self.home = home.resolve()
        self.config = self.home / CONFIG_NAME
        self.marker = str(self.config)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.settings.tls_addr in ("0.0.0.0", "::") else \
            self.settings.tls_addr
        return f"https://{host}:{self.settings.tls_port}"

    def argv(self) -> list[str]:
        binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
        if binary is None:
            raise ServiceError("nginx is not installed; run ./scripts/up (it installs Debian's "
                               "nginx-light when RPC_TLS_CERT_FILE is set).")
        write_config(self.settings, self.home)
        return [binary, "-p", str(self.home), "-c", str(self.config), "-e", "stderr"]

    def process_env(self, net: LocalNetwork | None) -> dict[str, str]:
        return dict(self.env)

    def probe(self) -> bool:
        host, port = self.url.removeprefix("https://").rsplit(":", 1)
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
                return True
        except OSError:
            return False

    def status(self) -> dict[str, Any]:
        return {"rpc_https_url": self.url}
