"""A real SMTP server on loopback (aiosmtpd) that keeps every mail it receives."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller


@dataclass
class Inbox:
    """The mails the server received, as parsed messages, in order."""

    mails: list[EmailMessage] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        """Aiosmtpd's hook: keep the mail, accept it."""
        with self.lock:
            mail = message_from_bytes(envelope.content, policy=policy.default)
            assert isinstance(mail, EmailMessage)
            self.mails.append(mail)
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        """The mails received for ``address``."""
        with self.lock:
            return [m for m in self.mails if m["To"] == address]

    def wait_for(self, address: str, timeout: float = 30.0) -> EmailMessage:
        """The first mail for ``address``, waiting up to ``timeout`` seconds for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.to(address)
            if found:
                return found[0]
            time.sleep(0.05)
        raise AssertionError(f"no mail for {address} within {timeout} s")


class SmtpServer:
    """aiosmtpd's threaded controller on 127.0.0.1 and a free port."""

    def __init__(self, port: int) -> None:
        self.inbox = Inbox()
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=port)
        self.url = f"smtp://127.0.0.1:{port}"

    def start(self) -> None:
        """Listen (returns once it accepts connections)."""
        self.controller.start()

    def stop(self) -> None:
        """Stop listening."""
        self.controller.stop()
