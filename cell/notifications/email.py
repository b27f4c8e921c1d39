"""Which mailer a cell's notifications go through: the project's own SMTP server, else the operator's.

A project's `email` integration names its server and sender; that host is a
destination like any other, so the SSRF guard vets it when the job runs and
the connection is made to the vetted address (the socket is opened here and
handed to `common.mail`, which still checks the TLS certificate against the
configured host name). Without such an integration, the cell's own mail
settings (`RELAY_SMTP_URL`, or `RELAY_MAIL_DIR` in `relay dev`) carry the
message, from `RELAY_MAIL_FROM`.
"""

from __future__ import annotations

import asyncio
import socket

from cell import netguard
from cell.integrations import EmailConfig
from cell.settings import CellSettings
from common.mail import TIMEOUT, Mailer, SendError, SmtpServer

__all__ = ["SendError", "operator_mailer", "project_mailer"]


async def _connect(addresses: tuple[netguard.IPAddress, ...], port: int) -> socket.socket:
    """A TCP connection to the first vetted address that answers."""
    loop = asyncio.get_running_loop()
    error: OSError | None = None
    for ip in addresses[:2]:
        sock = socket.socket(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (str(ip), port)), TIMEOUT)
            return sock
        except (OSError, TimeoutError) as exc:
            sock.close()
            error = exc if isinstance(exc, OSError) else OSError("connection timed out")
    assert error is not None  # check_host never vets an empty list
    raise error


def project_mailer(settings: CellSettings, config: EmailConfig) -> Mailer:
    """The project's own server; opening a session raises `cell.netguard.Refused` for a destination the cell
    may not call, `SendError` otherwise."""
    policy = netguard.Policy.of(settings)

    async def vetted(host: str, port: int) -> socket.socket:
        return await _connect(await netguard.check_host(host, port, policy), port)

    server = SmtpServer(host=config.host.strip("[]"), port=config.port, security=config.security,
                        username=config.username, password=config.password)
    return Mailer(config.from_address, smtp=server, connect=vetted)


def operator_mailer(settings: CellSettings) -> Mailer | None:
    """The cell's own way to send, when its operator configured one."""
    return Mailer.configured(settings.smtp_url, settings.mail_from, settings.mail_dir)
