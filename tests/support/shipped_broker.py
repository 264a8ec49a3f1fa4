"""A real Mosquitto on the shipped deploy/ files (mosquitto.conf and acl), with only the
paths, the port and the password file rewritten, so a test proves what is shipped."""

from __future__ import annotations

import getpass
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from simulators.broker import find_mosquitto, free_port, wait_for_port
from warden.config import BrokerConfig
from warden.process import terminate

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def rewrite(text: str, old: str, new: str, source: str = "deploy/mosquitto.conf") -> str:
    """Replace a line the test depends on; fail loudly when the shipped file changed."""
    assert old in text, f"{source} no longer contains {old!r}; update the test"
    return text.replace(old, new)


@dataclass
class ShippedBroker:
    host: str
    port: int
    folder: Path
    passwords: dict[str, str]
    process: subprocess.Popen[bytes]

    @property
    def log_path(self) -> Path:
        return self.folder / "mosquitto.log"

    def as_user(self, username: str) -> BrokerConfig:
        return BrokerConfig(host=self.host, port=self.port, username=username, password=self.passwords[username],
                            reconnect_min_seconds=0.2, reconnect_max_seconds=1.0)

    def stop(self) -> None:
        terminate(self.process, timeout=10)


def start_shipped_broker(folder: Path, passwords: dict[str, str], extra_conf: str = "", extra_acl: str = "") -> ShippedBroker:
    """Start Mosquitto on the shipped files in `folder` (created), with these accounts.
    `extra_conf` is appended to mosquitto.conf (e.g. a bridge section)."""
    binary, passwd_tool = find_mosquitto(), shutil.which("mosquitto_passwd")
    if binary is None or passwd_tool is None:
        raise RuntimeError("mosquitto and mosquitto_passwd are needed (apt-get install mosquitto)")
    folder.mkdir(parents=True, exist_ok=True)
    passwd = folder / "passwd"
    for i, (user, password) in enumerate(passwords.items()):
        create = ["-c"] if i == 0 else []
        subprocess.run([passwd_tool, *create, "-b", str(passwd), user, password], check=True, capture_output=True)
    acl = folder / "acl"
    acl.write_text((DEPLOY / "acl").read_text() + extra_acl)
    port = free_port()
    conf = (DEPLOY / "mosquitto.conf").read_text()
    conf = rewrite(conf, "password_file /etc/mosquitto/warden.passwd", f"password_file {passwd}")
    conf = rewrite(conf, "acl_file /etc/mosquitto/warden.acl", f"acl_file {acl}")
    conf = rewrite(conf, "listener 1883 127.0.0.1", f"listener {port} 127.0.0.1")
    conf = rewrite(conf, "persistence_location /var/lib/mosquitto/", f"persistence_location {folder}/")
    conf = rewrite(conf, "log_dest syslog", f"log_dest file {folder / 'mosquitto.log'}")
    # As root Mosquitto would switch to user "mosquitto", who cannot read the test's folder.
    conf += f"\nuser {getpass.getuser()}\n" + extra_conf
    conf_path = folder / "mosquitto.conf"
    conf_path.write_text(conf)
    process = subprocess.Popen([binary, "-c", str(conf_path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port("127.0.0.1", port)
    except TimeoutError:
        process.kill()
        _, err = process.communicate()
        raise RuntimeError(f"mosquitto refused the config: {err.decode(errors='replace')}") from None
    return ShippedBroker("127.0.0.1", port, folder, passwords, process)
