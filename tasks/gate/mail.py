"""Sending a magic link: by SMTP when ``SAGALINE_SMTP_URL`` is set, else into a folder.

The mail carries the flow's ids as ``X-Correlation-ID`` and ``X-Causation-ID`` headers, so a
mail can be traced to the saga that sent it. Nothing of its body is logged: it holds the
link's secret.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from urllib.parse import unquote, urlencode, urlsplit

from sagaline import NonRetryableError

SMTP_TIMEOUT_S = 10.0


class MailRefusedError(NonRetryableError):
    """Raised when the mail server refuses the recipient for good."""


@dataclass
class Mailer:
    """Where magic links go; ``configure`` it once per process (``config`` does)."""

    smtp_url: str | None = None
    outbox: Path = Path("var/outbox")
    sender: str = "Thunderline <no-reply@thunderline.localhost>"
    public_url: str = "http://localhost:8000"

    def configure(self, *, smtp_url: str | None, outbox: Path, sender: str,
                  public_url: str) -> None:
        """Set the SMTP server, the sender and the site links point at.

        ``smtp_url`` is ``smtp://``, ``smtp+starttls://`` or ``smtps://``; ``None`` writes
        mails into ``outbox`` instead.
        """
        if smtp_url is not None and urlsplit(smtp_url).scheme not in SCHEMES:
            raise ValueError(
                f"SAGALINE_SMTP_URL must start with one of {', '.join(sorted(SCHEMES))}, "
                "like smtp://localhost:1025"
            )
        self.smtp_url, self.outbox, self.sender = smtp_url, outbox, sender
        self.public_url = public_url.rstrip("/")

    def link(self, secret: str, redirect: str) -> str:
        """The sign-in link for a secret, sending the user to ``redirect`` afterwards."""
        query = urlencode({"token": secret, "redirect": redirect})
        return f"{self.public_url}/auth/magic-link?{query}"

    def send(self, message: EmailMessage) -> str:
        """Send ``message`` (or write it to the outbox); return where it went."""
        if self.smtp_url is None:
            self.outbox.mkdir(parents=True, exist_ok=True)
            name = message["Message-ID"].strip("<>").replace("@", "_") + ".eml"
            path = self.outbox / name
            path.write_bytes(message.as_bytes())
            return str(path)
        parts = urlsplit(self.smtp_url)
        host, port = parts.hostname or "localhost", parts.port or SCHEMES[parts.scheme]
        client: smtplib.SMTP
        if parts.scheme == "smtps":
            client = smtplib.SMTP_SSL(host, port, timeout=SMTP_TIMEOUT_S,
                                      context=ssl.create_default_context())
        else:
            client = smtplib.SMTP(host, port, timeout=SMTP_TIMEOUT_S)
        with client:
            if parts.scheme == "smtp+starttls":
                client.starttls(context=ssl.create_default_context())
            if parts.username:
                client.login(unquote(parts.username), unquote(parts.password or ""))
            try:
                client.send_message(message)
            except smtplib.SMTPRecipientsRefused as error:
                raise MailRefusedError(
                    f"the mail server refused {message['To']}: {error.recipients}"
                ) from error
        return f"{host}:{port}"


SCHEMES = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}


def magic_link_mail(mailer: Mailer, *, to: str, link: str, headers: dict[str, str]) -> EmailMessage:
    """The mail that carries a magic link, with the flow's ids as headers."""
    message = EmailMessage()
    message["From"] = mailer.sender
    message["To"] = to
    message["Subject"] = "Your Thunderline sign-in link"
    message["Message-ID"] = make_msgid(domain="thunderline.localhost")
    for name, value in headers.items():
        message[name] = value
    message.set_content(
        "Hello,\n\nSign in to Thunderline with this link (it works once, for one hour):\n\n"
        f"{link}\n\nIf you did not ask for it, ignore this mail.\n"
    )
    return message


#: The process's mailer.
mailer = Mailer()
