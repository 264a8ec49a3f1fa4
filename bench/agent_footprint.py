"""Agent footprint: RSS and CPU share of a real agent process reading simulated devices at
1 Hz (half MQTT-native meters, half serial patrol readers on pseudo-terminals sending
heartbeats), started as `warden-agent`, the entry point small boards are told to use
(docs/agent.md). Baseline in the same run: a bare paho process that forwards the
same MQTT device messages, measured the same way.

Both run from bytecode, as an installed package does: see `_bytecode_env`.

    python -m bench.agent_footprint [--devices N] [--seconds S]
    python -m bench.agent_footprint --ack-cost   # end-to-end acks on against off

The agent runs with end-to-end acknowledgement on, confirmed by a gateway stand-in in
this process (`Confirmer`, as gateway/acks.py does), as on a site: without it the
unconfirmed rows would pile up in the outbox and be measured too. With `--ack-cost` the
baseline is the same agent deleting on the broker's PUBACK (`ack_timeout_seconds: null`)
and the ratio is what end-to-end acknowledgement costs the agent (issue 17: <= 10 %).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml

from bench.ingest import BROKER_TUNING
from simulators.broker import MosquittoBroker
from simulators.patrol_reader import PatrolReaderSim
from tests.support.scripts import MissingConsoleScript, console_script
from warden import topics
from warden.acks import encode_ack
from warden.config import BrokerConfig
from warden.mqtt import make_client

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

BARE_FORWARDER = """
import sys, paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="bare-forwarder")
c.on_connect = lambda c, u, f, rc, p: c.subscribe([(f"devices/bench/meter-{i}/state", 1) for i in range(count)])
c.on_message = lambda c, u, m: c.publish("warden/v1/bench/bare/events", m.payload, qos=1)
c.connect(host, port)
c.loop_forever()
"""


@dataclass(frozen=True)
class Footprint:
    name: str
    rss_mb: float
    cpu_percent: float


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _measure(name: str, process: subprocess.Popen[bytes], seconds: float) -> Footprint:
    time.sleep(3)  # start-up and imports are not the steady state being measured
    cpu0, t0 = _cpu_seconds(process.pid), time.perf_counter()
    time.sleep(seconds)
    cpu = _cpu_seconds(process.pid) - cpu0
    return Footprint(name, _rss_mb(process.pid), 100 * cpu / (time.perf_counter() - t0))


class DeviceLoad:
    """Meters publish and readers send a heartbeat, every device once a second."""

    def __init__(self, broker: BrokerConfig, meters: int, readers: list[PatrolReaderSim]) -> None:
        self.meters = meters
        self.readers = readers
        self.client = make_client(broker, "bench-devices")
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        energy = 0.0
        while not self.stop.wait(1.0):
            now = datetime.now(timezone.utc)
            energy += 0.001
            for i in range(self.meters):
                payload = json.dumps({"ts": now.isoformat(), "power_w": 800.0 + i, "energy_kwh": energy})
                self.client.publish(f"devices/bench/meter-{i}/state", payload, qos=1)
            for reader in self.readers:
                reader.heartbeat(now)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.client.disconnect()
        self.client.loop_stop()


class Confirmer:
    """Stands in for the gateway: confirms every event id the agent sends (warden/acks.py)."""

    def __init__(self, broker: BrokerConfig, site: str, agent: str) -> None:
        self.ack_topic = topics.ack_topic(site, agent)
        self.client = make_client(broker, "bench-confirmer")
        events = topics.events_topic(site, agent)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(events, qos=1)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _on_message(self, client: object, userdata: object, message: object) -> None:
        body = json.loads(message.payload)  # type: ignore[attr-defined]
        ids = [e["id"] for e in body["events"]] if "events" in body else [body["id"]]
        self.client.publish(self.ack_topic, encode_ack(ids), qos=1, retain=True)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _agent_config(
    work: Path, broker: BrokerConfig, meters: int, readers: list[PatrolReaderSim], ack_timeout: float | None = 30.0
) -> Path:
    fields = {"power_w": {"quantity": "power", "unit": "W"}, "energy_kwh": {"quantity": "energy", "unit": "kWh", "cumulative": True}}
    devices = [{"driver": "mqtt_json", "id": f"meter-{i}", "topic": f"devices/bench/meter-{i}/state", "fields": fields} for i in range(meters)]
    devices += [{"driver": "patrol_line", "id": f"reader-{i}", "port": r.port} for i, r in enumerate(readers)]
    config = {"id": "agent-bench", "site": "bench", "broker": broker.model_dump(exclude_none=True),
              "buffer_path": str(work / "outbox.db"), "heartbeat_seconds": 30, "ack_timeout_seconds": ack_timeout,
              "devices": devices}
    path = work / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


#: Imports every module the measured agent imports (all drivers' included; a connect to
#: the broker encodes its host name with the idna codec).
WARM_UP = """
import encodings.idna, importlib, pkgutil
import agent.main, agent.runner, agent.drivers
for module in pkgutil.iter_modules(agent.drivers.__path__):
    importlib.import_module("agent.drivers." + module.name)
"""


def _bytecode_env(work: Path) -> dict[str, str]:
    """The agent's environment: its modules run from bytecode, as an installed agent's do.

    `pip install` compiles a package to bytecode, and an editable checkout caches what it
    compiles in __pycache__, unless PYTHONDONTWRITEBYTECODE is set, as in some development
    shells and containers. Then the agent would compile this checkout's modules from
    source at every start, and the compiler's scratch memory would stay in the measured
    RSS (about 0.7 MB at 200 devices): a cost of the shell, not of the agent. So the agent
    gets a bytecode cache of this run's own (PYTHONPYCACHEPREFIX, which then holds every
    module's bytecode, the standard library's too), filled by importing what it imports."""
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(work / "pycache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([sys.executable, "-c", WARM_UP], env=env, check=True)
    return env


def _warden_agent() -> str:
    """This environment's `warden-agent`, beside its interpreter, never PATH's: a
    `warden-agent` of another Python found first on PATH would be measured instead."""
    try:
        return console_script("warden-agent")
    except MissingConsoleScript as exc:
        sys.exit(str(exc))


@dataclass
class Rig:
    """A broker, the devices' load and a gateway stand-in confirming what the agent sends."""

    work: Path
    broker: BrokerConfig
    meters: int
    readers: list[PatrolReaderSim]
    env: dict[str, str]

    def agent(self, name: str, run_dir: Path, seconds: float, acks: bool = True) -> tuple[Footprint, int]:
        """The agent's footprint over `seconds`, and the outbox rows left after its SIGTERM."""
        run_dir.mkdir()
        path = _agent_config(run_dir, self.broker, self.meters, self.readers, 30.0 if acks else None)
        agent = subprocess.Popen([_warden_agent(), "--config", str(path), "--log-level", "ERROR"], env=self.env)
        measured = _measure(name, agent, seconds)
        agent.terminate()
        agent.wait(30)
        db = sqlite3.connect(run_dir / "outbox.db")
        left = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        db.close()
        return measured, left


@contextmanager
def rig(devices: int) -> Iterator[Rig]:
    meters, serial = devices // 2, devices - devices // 2
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = MosquittoBroker(workdir=work / "mq", extra_config=BROKER_TUNING)
        config = BrokerConfig(host=broker.host, port=broker.port)
        readers = [PatrolReaderSim(f"r{i}") for i in range(serial)]
        load = DeviceLoad(config, meters, readers)
        confirmer = Confirmer(config, "bench", "agent-bench")
        try:
            yield Rig(work, config, meters, readers, _bytecode_env(work))
        finally:
            confirmer.close()
            load.close()
            for reader in readers:
                reader.close()
            broker.stop()


def run(devices: int, seconds: float) -> tuple[Footprint, Footprint]:
    """The bare forwarder, then the agent with end-to-end acks confirmed as a gateway would."""
    with rig(devices) as bench:
        bare = subprocess.Popen([sys.executable, "-c", BARE_FORWARDER, bench.broker.host, str(bench.broker.port), str(bench.meters)])
        baseline = _measure("bare paho forwarder (MQTT devices only)", bare, seconds)
        bare.terminate()
        bare.wait()
        serial = len(bench.readers)
        measured, _ = bench.agent(f"warden-agent ({bench.meters} MQTT + {serial} serial devices)", bench.work / "run", seconds)
    return baseline, measured


def ack_cost(devices: int, seconds: float, repeat: int) -> tuple[Footprint, Footprint, int]:
    """The agent deleting on PUBACK, then keeping rows until confirmed, alternately
    `repeat` times each; the lowest CPU of each (noise only adds) and the last RSS.
    Also returns the rows left in the outbox at the end of the last confirmed run."""
    runs: dict[bool, list[Footprint]] = {False: [], True: []}
    left = 0
    with rig(devices) as bench:
        for n in range(repeat):
            for acks in (False, True):
                name = f"warden-agent, {'end-to-end acks' if acks else 'deleting on PUBACK'}"
                measured, rows = bench.agent(name, bench.work / f"run-{n}-{acks}", seconds, acks)
                runs[acks].append(measured)
                left = rows if acks else left
    pick = lambda results: Footprint(results[-1].name, results[-1].rss_mb, min(r.cpu_percent for r in results))  # noqa: E731
    return pick(runs[False]), pick(runs[True]), left


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--ack-cost", action="store_true", help="end-to-end acks on against off")
    parser.add_argument("--repeat", type=int, default=2, help="with --ack-cost: runs of each")
    args = parser.parse_args()
    if args.ack_cost:
        off, on, left = ack_cost(args.devices, args.seconds, args.repeat)
        print(f"{'process':<48} {'RSS MB':>8} {'CPU %':>7} {'RSS ratio':>10} {'CPU ratio':>10}")
        for result in (off, on):
            print(f"{result.name:<48} {result.rss_mb:>8.1f} {result.cpu_percent:>7.1f} "
                  f"{result.rss_mb / off.rss_mb:>10.2f} {result.cpu_percent / max(off.cpu_percent, 0.01):>10.2f}")  # fmt: skip
        print(f"rows left unconfirmed in the outbox after SIGTERM: {left}")
        return
    baseline, measured = run(args.devices, args.seconds)
    print(f"{'process':<48} {'RSS MB':>8} {'CPU %':>7} {'CPU ratio':>10}")
    for result in (baseline, measured):
        print(f"{result.name:<48} {result.rss_mb:>8.1f} {result.cpu_percent:>7.1f} {result.cpu_percent / max(baseline.cpu_percent, 0.01):>10.1f}")


if __name__ == "__main__":
    main()
