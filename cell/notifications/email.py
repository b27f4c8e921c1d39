"""Email over SMTP with the project's `email` integration (aiosmtplib).

The SMTP host is a destination like any other: the SSRF guard vets it when the
job runs, and the connection is made to the vetted address (the socket is
opened here and handed to aiosmtplib), while TLS still checks the certificate
against the configured host name. `starttls` insists on STARTTLS (a server that
does not offer it gets nothing, never a plain-text fallback), `tls` speaks TLS
from the first byte, `none` is plain SMTP for a relay on a trusted network.
Errors carry the SMTP code and kind only: aiosmtplib's messages can name
recipients, and no address may reach a log.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import ssl
from collections.abc import AsyncIterator
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import aiosmtplib

from cell import netguard
from cell.integrations import EmailConfig
from cell.settings import CellSettings

TIMEOUT = 20.0


class SendError(Exception):
    """Sending failed; the message says how (kind and SMTP code), never to whom."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
        """The server refused this message for good (5xx): retrying it would not help."""


@functools.cache
def _tls() -> ssl.SSLContext:
    """TLS for SMTP, built once: the system's trust store, certificates checked against the configured host."""
    return ssl.create_default_context()


def _describe(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    return f"{type(exc).__name__}" + (f" {code}" if code else "")


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


@contextlib.asynccontextmanager
async def session(settings: CellSettings, config: EmailConfig) -> AsyncIterator[aiosmtplib.SMTP]:
    """An SMTP session with the configured server, secured and logged in as configured.

    Raises `cell.netguard.Refused` for a destination the cell may not call, `SendError` otherwise.
    """
    host = config.host.strip("[]")
    addresses = await netguard.check_host(host, config.port, netguard.Policy.of(settings))
    try:
        sock = await _connect(addresses, config.port)
    except OSError as exc:
        raise SendError(f"SMTP server unreachable ({type(exc).__name__})") from None
    client = aiosmtplib.SMTP(hostname=host, sock=sock, timeout=TIMEOUT, use_tls=config.security == "tls",
                             start_tls=config.security == "starttls", username=config.username,
                             password=config.password, tls_context=None if config.security == "none" else _tls())
    try:
        await client.connect()
    except (aiosmtplib.SMTPException, OSError) as exc:
        sock.close()
        raise SendError(f"SMTP session failed ({_describe(exc)})") from None
    try:
        yield client
    finally:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await client.quit()
        client.close()  # the connection owns the socket from here on


def compose(config: EmailConfig, to: str, subject: str, body: str) -> EmailMessage:
    """A plain-text, auto-generated message from the project's sender to one person (no shared To or Cc)."""
    message = EmailMessage()
    message["From"] = config.from_address
    message["To"] = to
    message["Subject"] = " ".join(subject.split())
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=config.from_address.rpartition("@")[2])
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies back
    message.set_content(body)
    return message


async def send(client: aiosmtplib.SMTP, config: EmailConfig, message: EmailMessage, to: str) -> None:
    """Hand one message to the server for one recipient; SendError when it was not accepted."""
    try:
        await client.send_message(message, sender=config.from_address, recipients=[to])
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = [r.code for r in exc.recipients]
        raise SendError(f"recipient refused ({', '.join(map(str, codes))})",
                        permanent=all(c >= 500 for c in codes)) from None
    except aiosmtplib.SMTPResponseException as exc:
        raise SendError(f"message refused ({_describe(exc)})", permanent=exc.code >= 500) from None
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise SendError(f"SMTP session failed ({_describe(exc)})") from None
