"""common/mail: settings, `.eml` files written whole, and SMTP delivery to a real local server (aiosmtpd)."""

from __future__ import annotations

import email
import email.policy
import threading
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from common import mail
from common.settings import SettingsError
from relay.embedded import free_port


def test_smtp_urls() -> None:
    server = mail.smtp_from_url("smtp://me%40x.example:p%2Fw@mail.example.com")
    assert (server.host, server.port, server.security, server.username, server.password) == (
        "mail.example.com", 587, "starttls", "me@x.example", "p/w")
    assert "p/w" not in repr(server)
    assert mail.smtp_from_url("smtps://mail.example.com").port == 465
    assert mail.smtp_from_url("smtp+plain://10.0.0.5:2525").security == "none"
    for bad in ("http://mail.example.com", "smtp://", "smtp://host:99999"):
        with pytest.raises(ValueError):
            mail.smtp_from_url(bad)


def test_settings_are_checked() -> None:
    mail.check_settings("", mail.DEFAULT_FROM, "")
    mail.check_settings("smtps://mail.example.com", "ops@example.com", "/tmp/mail")
    for args, var in ((("ftp://x", mail.DEFAULT_FROM, ""), "RELAY_SMTP_URL"),
                      (("", "nobody", ""), "RELAY_MAIL_FROM"),
                      (("", mail.DEFAULT_FROM, "relative/dir"), "RELAY_MAIL_DIR")):
        with pytest.raises(SettingsError, match=var):
            mail.check_settings(*args)
    assert mail.Mailer.configured("", mail.DEFAULT_FROM, "") is None


async def test_a_mail_directory_gets_one_whole_eml_file_per_message(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    directory = tmp_path / "mail"
    mailer = mail.Mailer.configured("", "Relay <no-reply@relay.test>", str(directory))
    assert mailer is not None
    with caplog.at_level("INFO", logger="relay.mail"):
        async with mailer.session() as outbox:
            await outbox.send("ada@example.com", "Hello\n  there", "Open https://relay.test/x\n")
            await outbox.send("bob@example.com", "Second", "Body")
    files = sorted(directory.iterdir())
    assert [f.suffix for f in files] == [".eml", ".eml"]  # no temporary file left behind
    # The log says where each message is (`relay dev`: the reset link is found from it), and nothing of it.
    logged = [r.getMessage() for r in caplog.records]
    assert logged == [f"email written to {f} (no SMTP server configured)" for f in files]
    assert not [m for m in logged if "ada@" in m or "bob@" in m or "relay.test/x" in m or "Hello" in m]
    first = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert first["To"] == "ada@example.com" and first["From"] == "Relay <no-reply@relay.test>"
    assert first["Subject"] == "Hello there" and first["Auto-Submitted"] == "auto-generated"
    assert "https://relay.test/x" in first.get_content()
    # A long link stays on one line of the stored file, unencoded.
    link = "https://relay.test/app/invitations/rinv_" + "x" * 43
    await mailer.send("cy@example.com", "Long", f"Open this link to accept the invitation right away: {link}\n")
    assert link in max(directory.iterdir()).read_text()


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.messages.append({"from": envelope.mail_from, "to": envelope.rcpt_tos,
                                  "message": email.message_from_bytes(envelope.content, policy=email.policy.default)})
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address.startswith("refused"):
            return "550 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"


async def test_smtp_delivery_and_refusals() -> None:
    inbox, port = _Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        mailer = mail.Mailer.configured(f"smtp+plain://127.0.0.1:{port}", "Relay <no-reply@relay.test>", "")
        assert mailer is not None and mailer.directory is None
        await mailer.send("ada@example.com", "Invitation", "Join us")
        (got,) = inbox.messages
        assert got["from"] == "no-reply@relay.test" and got["to"] == ["ada@example.com"]
        assert got["message"]["Subject"] == "Invitation"
        with pytest.raises(mail.SendError) as refused:
            await mailer.send("refused@example.com", "x", "y")
        assert refused.value.permanent and "refused@" not in str(refused.value)
        # STARTTLS required of a server that does not offer it: nothing is sent in the clear.
        strict = mail.Mailer.configured(f"smtp://127.0.0.1:{port}", mail.DEFAULT_FROM, "")
        assert strict is not None
        with pytest.raises(mail.SendError):
            await strict.send("ada@example.com", "x", "y")
        assert len(inbox.messages) == 1
    finally:
        controller.stop()
    with pytest.raises(mail.SendError, match="SMTP session failed"):  # nobody listening any more
        await mailer.send("ada@example.com", "x", "y")
