"""One way to send an email, for the router (invitations) and the cells (notifications).

A `Mailer` sends over SMTP when a server is configured, else writes each
message as one `.eml` file in a directory (`relay dev` points it at
`DIR/mail/`, so links in the messages can be followed by hand or by tests).
The operator's server is given as one URL (`RELAY_SMTP_URL`):
`smtp://user:password@host:587` insists on STARTTLS (a server that does not
offer it gets nothing, never a plain-text fallback), `smtps://host:465` speaks
TLS from the first byte, `smtp+plain://host:25` is plain SMTP for a relay on a
trusted network. A caller that must vet where it connects (a cell sending
through a project's own server) passes `connect`, which opens the socket to a
vetted address; TLS still checks the certificate against the configured host.

Errors carry the SMTP code and kind only: aiosmtplib's messages can name
recipients, and no address may reach a log.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import unquote, urlsplit

import aiosmtplib

from common.problems import Problem
from common.settings import SettingsError

log = logging.getLogger("relay.mail")

Security = Literal["starttls", "tls", "none"]
TIMEOUT = 20.0
DEFAULT_FROM = "Relay <no-reply@relay.localhost>"

_SCHEMES: dict[str, tuple[Security, int]] = {"smtp": ("starttls", 587), "smtps": ("tls", 465),
                                             "smtp+plain": ("none", 25)}

Connect = Callable[[str, int], Awaitable[socket.socket]]
"""Opens the TCP connection to a vetted address of (host, port); OSError when none answers."""


class SendError(Exception):
    """Sending failed; the message says how (kind and SMTP code), never to whom."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
        """The server refused this message for good (5xx): retrying it would not help."""


@dataclass(frozen=True, slots=True)
class SmtpServer:
    """Where and how to hand messages over; the password stays out of reprs (and so out of logs)."""

    host: str
    port: int = 587
    security: Security = "starttls"
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def smtp_from_url(url: str) -> SmtpServer:
    """The server an `smtp://`, `smtps://` or `smtp+plain://` URL names (ValueError when it names none)."""
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise ValueError("must start with smtp://, smtps:// or smtp+plain://")
    if not parts.hostname:
        raise ValueError("names no host")
    security, default_port = _SCHEMES[parts.scheme]
    try:
        port = parts.port or default_port
    except ValueError as exc:
        raise ValueError("has an invalid port") from exc
    return SmtpServer(host=parts.hostname, port=port, security=security,
                      username=unquote(parts.username) if parts.username else None,
                      password=unquote(parts.password) if parts.password else None)


def check_settings(smtp_url: str, mail_from: str, mail_dir: str) -> None:
    """Validate a service's mail settings at start (one `SettingsError` line naming the variable)."""
    if smtp_url:
        try:
            smtp_from_url(smtp_url)
        except ValueError as exc:
            raise SettingsError(f"RELAY_SMTP_URL: {exc}") from None
    if "@" not in parseaddr(mail_from)[1]:
        raise SettingsError("RELAY_MAIL_FROM: must be an email address, e.g. 'Relay <no-reply@example.com>'")
    if mail_dir and not Path(mail_dir).is_absolute():
        raise SettingsError("RELAY_MAIL_DIR: must be an absolute path")


@functools.cache
def tls_context() -> ssl.SSLContext:
    """TLS for SMTP, built once: the system's trust store, certificates checked against the configured host."""
    return ssl.create_default_context()


def compose(sender: str, to: str, subject: str, body: str) -> EmailMessage:
    """A plain-text, auto-generated message from `sender` to one person (no shared To or Cc)."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = " ".join(subject.split())
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=parseaddr(sender)[1].rpartition("@")[2] or "relay.localhost")
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies back
    # Unencoded where the text allows, so a link in a stored `.eml` reads (and greps) as one piece.
    fits = all(len(line) <= 998 for line in body.splitlines())
    message.set_content(body, cte=("7bit" if body.isascii() else "8bit") if fits else "quoted-printable")
    return message


class Outbox(Protocol):
    """An open way to send: one SMTP session, or the mail directory."""

    async def send(self, to: str, subject: str, body: str) -> None:
        """Send one message to one person; `SendError` when it was not accepted."""


def _describe(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    return f"{type(exc).__name__}" + (f" {code}" if code else "")


class _SmtpOutbox:
    def __init__(self, client: aiosmtplib.SMTP, sender: str) -> None:
        self.client = client
        self.sender = sender

    async def send(self, to: str, subject: str, body: str) -> None:
        envelope_from = parseaddr(self.sender)[1]
        try:
            await self.client.send_message(compose(self.sender, to, subject, body), sender=envelope_from,
                                           recipients=[to])
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            raise SendError(f"recipient refused ({', '.join(map(str, codes))})",
                            permanent=all(c >= 500 for c in codes)) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise SendError(f"message refused ({_describe(exc)})", permanent=exc.code >= 500) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise SendError(f"SMTP session failed ({_describe(exc)})") from None


class _DirectoryOutbox:
    def __init__(self, directory: Path, sender: str) -> None:
        self.directory = directory
        self.sender = sender

    async def send(self, to: str, subject: str, body: str) -> None:
        data = bytes(compose(self.sender, to, subject, body))
        try:
            path = await asyncio.to_thread(write_eml, self.directory, data)
        except OSError as exc:
            raise SendError(f"mail directory not writable ({type(exc).__name__})") from None
        # Where to find it (under `relay dev`, the link of a reset or an invitation): the file only, never the
        # address, the subject or a link, which may hold a one-time token.
        log.info("email written to %s (no SMTP server configured)", path)


def write_eml(directory: Path, data: bytes) -> Path:
    """Write one message as `<time>-<id>.eml`, atomically: readers see the whole file or none of it."""
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns()}-{uuid.uuid4().hex}"
    tmp = directory / f".{name}.tmp"
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    final = directory / f"{name}.eml"
    tmp.replace(final)
    return final


class Mailer:
    """How a service sends email: over SMTP when a server is given, else into a directory of `.eml` files."""

    def __init__(self, sender: str, *, smtp: SmtpServer | None = None, directory: str = "",
                 connect: Connect | None = None) -> None:
        if smtp is None and not directory:
            raise ValueError("a mailer needs an SMTP server or a directory")
        self.sender = sender
        self.smtp = smtp
        self.directory = Path(directory) if directory else None
        self.connect = connect

    @classmethod
    def configured(cls, smtp_url: str, mail_from: str, mail_dir: str) -> Mailer | None:
        """The operator's mailer from a service's (validated) settings; None when neither is set."""
        if smtp_url:
            return cls(mail_from, smtp=smtp_from_url(smtp_url))
        if mail_dir:
            return cls(mail_from, directory=mail_dir)
        return None

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Outbox]:
        """Open the way to send once for several messages (one SMTP session); `SendError` when it cannot be."""
        if self.smtp is None:
            assert self.directory is not None
            yield _DirectoryOutbox(self.directory, self.sender)
            return
        server = self.smtp
        sock = None
        if self.connect is not None:
            try:
                sock = await self.connect(server.host, server.port)
            except OSError as exc:
                raise SendError(f"SMTP server unreachable ({type(exc).__name__})") from None
        client = aiosmtplib.SMTP(
            hostname=server.host, port=None if sock else server.port, sock=sock, timeout=TIMEOUT,
            use_tls=server.security == "tls", start_tls=server.security == "starttls", username=server.username,
            password=server.password, tls_context=None if server.security == "none" else tls_context())
        try:
            await client.connect()
        except (aiosmtplib.SMTPException, OSError) as exc:
            if sock is not None:
                sock.close()
            raise SendError(f"SMTP session failed ({_describe(exc)})") from None
        try:
            yield _SmtpOutbox(client, self.sender)
        finally:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await client.quit()
            client.close()  # the connection owns the socket from here on

    async def send(self, to: str, subject: str, body: str) -> None:
        """Send one message in a session of its own."""
        async with self.session() as outbox:
            await outbox.send(to, subject, body)


async def send_or_problem(mailer: Mailer | None, to: str, subject: str, body: str, *, what: str) -> None:
    """Send a message a request depends on (an invitation, a reset link): a 503 problem when no way to send
    email is configured or the server refuses for now, a 422 when it refuses for good."""
    if mailer is None:
        raise Problem(503, f"this service has no SMTP server or mail directory configured to send {what}",
                      retry_after=60)
    try:
        await mailer.send(to, subject, body)
    except SendError as exc:
        log.warning("%s not sent: %s", what, exc)
        raise Problem(503 if not exc.permanent else 422, f"the {what} could not be sent",
                      retry_after=30 if not exc.permanent else None) from None
