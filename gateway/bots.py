"""Chat group bots and templated webhooks: 企业微信 (WeCom), 钉钉 (DingTalk) and 飞书 (Feishu).

The teams warden serves read alerts in group chats, whose bots take a fixed JSON shape
instead of warden's change document (docs/gateway.md#group-bots). A webhook sink with a
`preset` or a `body` template is a `BotSink`:

- The body is a JSON template whose string leaves are Jinja2 (sandboxed), rendered with
  `text` (the changes as lines a person reads, names before ids), `title`, `changes` and,
  for one change, `alert`, `change` and `note`. A preset supplies the body its bot needs.
- Signing, when the bot has a `secret`: DingTalk puts `timestamp` (ms) and `sign` on the
  URL, sign = urlencode(base64(HMAC-SHA256(key=secret, msg=f"{timestamp}\\n{secret}")));
  Feishu puts `timestamp` (s) and `sign` in the body, sign =
  base64(HMAC-SHA256(key=f"{timestamp}\\n{secret}", msg=b"")).
- Rate: WeCom takes about 20 messages a minute per bot. A sink with `max_per_minute`
  waits for a free slot (its rows stay in the durable outbox, gateway/notify.py) and,
  when several changes wait, sends them together as one message: late, never dropped.
  One message speaks one language: on a gateway of several sites the waiting changes
  go together only while their sites share the first one's language (`together`), and
  each line names rooms and devices by its own site's names.
- A bot answers HTTP 200 with `errcode` (WeCom, DingTalk) or `code` (Feishu) in JSON; a
  non-zero one is a failed delivery, retried when it means "too fast".

Secrets (the key in the URL, the signing secret) are never logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any, Callable
from urllib.parse import quote_plus

import httpx
from jinja2 import TemplateError
from jinja2.sandbox import SandboxedEnvironment

from gateway.config import WebhookSinkConfig
from gateway.delivery import DeliveryError, change_document, note_text, safe_target
from gateway.store import AlertChange
from warden.config import ConfigError
from warden.i18n import Names, localise

#: The JSON body each preset's bot takes, as a template (string leaves are Jinja2).
PRESET_BODIES: dict[str, dict[str, Any]] = {
    "wecom": {"msgtype": "text", "text": {"content": "{{ text }}"}},
    "dingtalk": {"msgtype": "text", "text": {"content": "{{ text }}"}},
    "feishu": {"msg_type": "text", "content": {"text": "{{ text }}"}},
}

#: Messages a minute a preset's bot accepts when the config sets none (WeCom: about 20).
PRESET_PER_MINUTE: dict[str, int] = {"wecom": 20}

#: Presets that sign with a secret.
SIGNING_PRESETS = frozenset({"dingtalk", "feishu"})

#: Error codes in a 200 answer that mean "too many messages": worth a retry after backoff
#: (WeCom 45009 "api freq out of limit", DingTalk 130101 "send too fast").
_RETRYABLE_CODES = frozenset({45009, 130101})

#: How a change reads at the head of its line.
_ACTIONS = {"opened": "新告警 opened", "updated": "更新 updated", "acknowledged": "已确认 acknowledged",
            "escalated": "已升级 escalated", "resolved": "已解决 resolved"}  # fmt: skip

def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk's signature, URL-encoded, for `&timestamp=...&sign=...`."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return quote_plus(base64.b64encode(digest).decode())


def feishu_sign(secret: str, timestamp_s: int) -> str:
    """Feishu's signature: the key is timestamp and secret, the message empty."""
    digest = hmac.new(f"{timestamp_s}\n{secret}".encode(), b"", hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def change_line(change: AlertChange, locale: str = "en", names: Names | None = None) -> str:
    """One change as a person reads it: severity, what happened, the alert's message in the
    site's language (naming rooms and devices), then the ids an integrator needs."""
    alert = change.alert
    message = localise(alert.message, alert.message_id, alert.params, locale, names)
    head = f"[{alert.severity.upper()}] {_ACTIONS.get(change.action, change.action)}: {message}"
    tail = f"{alert.rule} · {alert.subject} · #{alert.id} · {alert.site}"
    note = f"\n{note_text(change, locale, names)}" if change.note and change.note != alert.message else ""  # an opening's note is its message
    return f"{head}{note}\n{tail}"


def template_context(changes: list[AlertChange], locale: str = "en", names: Names | None = None,
                     voice: Callable[[str], tuple[str, Names | None]] | None = None) -> dict[str, Any]:
    """What a body template may use; `text` and `title` in `locale`, or with `voice` each
    change in its own site's language and names (the title in the first's)."""
    voices = [voice(c.alert.site) if voice is not None else (locale, names) for c in changes]
    documents = [change_document(c) for c in changes]
    first = changes[0].alert
    title = localise(first.message, first.message_id, first.params, *voices[0]) if len(changes) == 1 \
        else f"warden: {len(changes)} alert changes"
    context: dict[str, Any] = {
        "text": "\n\n".join(change_line(c, *v) for c, v in zip(changes, voices)),
        "title": title,
        "changes": documents,
    }
    if len(changes) == 1:
        context.update(alert=documents[0]["alert"], change=changes[0].action, note=changes[0].note)
    return context


class BodyTemplate:
    """A JSON template: each string leaf rendered by a sandboxed Jinja2 (no autoescape:
    the result is JSON-encoded, not HTML)."""

    def __init__(self, body: dict[str, Any], key: str) -> None:
        self._env = SandboxedEnvironment(autoescape=False, keep_trailing_newline=True)
        self.key = key
        try:
            self._tree = self._compile(body)
        except TemplateError as exc:
            raise ConfigError(f"{key}: not a valid template: {exc}") from None

    def _compile(self, node: Any) -> Any:
        if isinstance(node, str):
            return self._env.from_string(node)
        if isinstance(node, dict):
            return {k: self._compile(v) for k, v in node.items()}
        if isinstance(node, list):
            return [self._compile(v) for v in node]
        return node

    def render(self, context: dict[str, Any]) -> Any:
        return self._render(self._tree, context)

    def _render(self, node: Any, context: dict[str, Any]) -> Any:
        if isinstance(node, dict):
            return {k: self._render(v, context) for k, v in node.items()}
        if isinstance(node, list):
            return [self._render(v, context) for v in node]
        if hasattr(node, "render"):
            return node.render(context)
        return node


class BotSink:
    """A webhook whose body is a template (a preset's or the config's), signed when the
    bot asks for it. `now` is the wall clock (unix seconds), for the signatures."""

    def __init__(self, name: str, config: WebhookSinkConfig, now: Callable[[], float] = time.time, locale: str = "en",
                 names: Names | None = None, voices: Callable[[str], tuple[str, Names | None]] | None = None) -> None:
        """`locale`, `names`: the site's, so the group reads its alerts in its language, by names;
        `voices`: each site's, on a gateway of several sites (issue 21): each change is told in its site's."""
        key = f"alerts.sinks.{name}"
        if config.secret is not None and config.preset not in SIGNING_PRESETS:
            raise ConfigError(f"{key}.secret: only a dingtalk or feishu bot signs (preset is {config.preset!r})")
        body = config.body if config.body is not None else PRESET_BODIES.get(config.preset or "")
        if body is None:
            raise ConfigError(f"{key}: a bot sink needs a preset or a body")
        self.name = name
        self.config = config
        self.target = safe_target(config.url)
        self.per_minute = config.max_per_minute or PRESET_PER_MINUTE.get(config.preset or "")
        self.template = BodyTemplate(body, f"{key}.body")
        self.now = now
        self.locale, self.names = locale, names
        self.voices = voices
        self._client = httpx.Client(timeout=config.timeout_seconds, follow_redirects=False)

    def voice(self, site: str) -> tuple[str, Names | None]:
        """The language and names `site`'s alerts are told in."""
        return self.voices(site) if self.voices is not None else (self.locale, self.names)

    def together(self, changes: list[AlertChange]) -> int:
        """How many of `changes`, from the first, may go as one message: those whose sites speak
        the first one's language (the outbox sends the rest next, in theirs)."""
        first = self.voice(changes[0].alert.site)[0]
        return next((i for i, c in enumerate(changes) if self.voice(c.alert.site)[0] != first), len(changes))

    def request(self, changes: list[AlertChange]) -> tuple[str, bytes]:
        """The URL and body for `changes` (one message), signed as the preset wants."""
        document = self.template.render(template_context(changes, voice=self.voice))
        url = self.config.url
        secret = self.config.secret
        if secret is not None and self.config.preset == "dingtalk":
            stamp_ms = int(self.now() * 1000)
            url += ("&" if "?" in url else "?") + f"timestamp={stamp_ms}&sign={dingtalk_sign(secret, stamp_ms)}"
        elif secret is not None and self.config.preset == "feishu" and isinstance(document, dict):
            stamp_s = int(self.now())
            document = {"timestamp": str(stamp_s), "sign": feishu_sign(secret, stamp_s), **document}
        return url, json.dumps(document, ensure_ascii=False).encode()

    def send(self, change: AlertChange, key: str | None = None) -> None:
        self.send_many([change], key)

    def send_many(self, changes: list[AlertChange], key: str | None = None) -> None:
        """One message for `changes`; raises DeliveryError when the bot did not take it."""
        url, body = self.request(changes)
        headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "warden-gateway", **self.config.headers}
        try:
            response = self._client.post(url, content=body, headers=headers)
        except httpx.TransportError as exc:  # str(exc) may quote the URL and its key
            raise DeliveryError(type(exc).__name__, retryable=True) from None
        status = response.status_code
        if not response.is_success:
            raise DeliveryError(f"HTTP {status}", retryable=status >= 500 or status == 429)
        code = _answer_code(response.content)
        if code:
            raise DeliveryError(f"bot error {code}", retryable=code in _RETRYABLE_CODES)

    def close(self) -> None:
        self._client.close()


def _answer_code(content: bytes) -> int:
    """The bot's error code in a 200 answer (0: accepted; an empty or non-JSON answer
    counts as accepted, as for a plain webhook)."""
    try:
        answer = json.loads(content) if content else {}
    except ValueError:
        return 0
    if not isinstance(answer, dict):
        return 0
    code = answer.get("errcode", answer.get("code", answer.get("StatusCode", 0)))
    return code if isinstance(code, int) else 0


def is_bot(config: WebhookSinkConfig) -> bool:
    """A webhook sink sends a template's body, not warden's change document."""
    return config.preset is not None or config.body is not None
