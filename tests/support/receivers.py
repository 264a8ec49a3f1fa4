"""Real notification receivers for tests: an HTTP server that records webhook POSTs and
an SMTP server (aiosmtpd) that records mail, both on free loopback ports."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import json
import socket
import ssl
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass(frozen=True)
class Post:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the server answered

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    """Answers POSTs with scripted statuses per path (then 200) and records each one.
    `hold` (an Event), while clear, keeps every request waiting: a hung receiver."""

    def __init__(self) -> None:
        self.posts: list[Post] = []
        self.hold = threading.Event()
        self.hold.set()
        self._scripts: dict[str, list[int]] = {}
        self._answers: dict[str, list[bytes]] = {}  # bodies of the next answers per path (a chat bot's JSON)
        self._arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._arrived:
                    script = receiver._scripts.get(self.path, [])
                    status = script.pop(0) if script else 200
                    answers = receiver._answers.get(self.path, [])
                    answer = answers.pop(0) if answers else b""
                    receiver.posts.append(Post(self.path, dict(self.headers), body, status))
                    receiver._arrived.notify_all()
                receiver.hold.wait(30)
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="webhook-receiver", daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def respond(self, path: str, *statuses: int) -> None:
        """Answer the next requests to `path` with these statuses, then 200."""
        with self._arrived:
            self._scripts[path] = list(statuses)

    def answer(self, path: str, *bodies: bytes) -> None:
        """Send these bodies with the next answers to `path` (then an empty one)."""
        with self._arrived:
            self._answers[path] = list(bodies)

    def received(self, path: str | None = None) -> list[Post]:
        with self._arrived:
            return [p for p in self.posts if path is None or p.path == path]

    def wait_for(self, count: int, path: str | None = None, timeout: float = 10.0) -> list[Post]:
        """At least `count` posts (to `path`), or AssertionError after `timeout`."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self._matching(path)) >= count, timeout):
                raise AssertionError(f"got {len(self._matching(path))} of {count} posts to {path or 'any path'}")
            return self._matching(path)

    def _matching(self, path: str | None) -> list[Post]:
        return [p for p in self.posts if path is None or p.path == path]

    def close(self) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    message: EmailMessage
    login: str | None

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def body(self) -> str:
        part = self.message.get_body(("plain",))
        assert part is not None
        return str(part.get_content())


@dataclass
class _MailHandler:
    mails: list[Mail] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)
    replies: list[str] = field(default_factory=list)  # answers to the next DATA commands, then 250

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's naming
        if self.replies:
            return self.replies.pop(0)  # refused: nothing recorded
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        with self.arrived:
            self.mails.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), message, login))
            self.arrived.notify_all()
        return "250 OK"


class SmtpReceiver:
    """aiosmtpd on a free loopback port. With `tls` (cert and key files) it offers and
    requires STARTTLS, or with `implicit_tls` speaks TLS from the first byte; with
    `credentials` it requires AUTH with that login and password; `replies` answer the
    first DATA commands (e.g. "451 4.3.0 try again later")."""

    def __init__(
        self,
        tls: tuple[Path, Path] | None = None,
        credentials: tuple[str, str] | None = None,
        implicit_tls: bool = False,
        replies: tuple[str, ...] = (),
    ) -> None:
        self.handler = _MailHandler(replies=list(replies))
        self.port = _free_port()
        kwargs: dict[str, Any] = {}
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            if implicit_tls:
                kwargs.update(ssl_context=context)
            else:
                kwargs.update(tls_context=context, require_starttls=True)
        if credentials is not None:
            kwargs.update(authenticator=_Authenticator(*credentials), auth_required=True)
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, **kwargs)
        self.controller.start()

    @property
    def mails(self) -> list[Mail]:
        with self.handler.arrived:
            return list(self.handler.mails)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Mail]:
        with self.handler.arrived:
            if not self.handler.arrived.wait_for(lambda: len(self.handler.mails) >= count, timeout):
                raise AssertionError(f"got {len(self.handler.mails)} of {count} mails")
            return list(self.handler.mails)

    def close(self) -> None:
        self.controller.stop()


class _Authenticator:
    def __init__(self, login: str, password: str) -> None:
        self.login, self.password = login.encode(), password.encode()

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (self.login, self.password)
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (PEM files); trust the certificate as the CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file
