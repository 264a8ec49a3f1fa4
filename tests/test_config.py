"""Configuration files: the shipped samples, TOML and YAML, and errors that say where and why."""

from __future__ import annotations

from datetime import date, time
from pathlib import Path

import pytest
import yaml

from agent.config import AgentConfig
from agent.drivers.modbus_rtu import ModbusRtuDevice
from agent.drivers.mqtt_json import MqttJsonDevice
from agent.drivers.patrol_line import PatrolLineDevice
from agent.drivers.patrol_wand import PatrolWandDevice
from gateway.config import GatewayConfig, InfluxHistorianConfig, SqliteHistorianConfig
from warden.config import ConfigError, DeviceLocation, SiteConfig, WeeklyWindow, load_config
from warden.events import Quantity

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"

AGENT_YAML = """\
id: agent-a
site: riverside
devices:
  - driver: patrol_line
    id: patrol-reader-1
    port: /dev/ttyUSB0
"""

SITE_YAML = """\
id: riverside
timezone: Europe/Berlin
schedules:
  school-day:
    - {days: mon-fri, hours: "07:30-18:00"}
buildings:
  - id: A
    rooms:
      - {id: A-101, schedule: school-day, devices: [ac-a101]}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def config_error(path: Path, model: type) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, model)
    message = str(caught.value)
    for line in message.splitlines():
        assert line.startswith(f"{path}: "), f"every line must name the file: {line!r}"
    assert "Traceback" not in message
    return message


# --------------------------------------------------------------------------- shipped samples


def test_shipped_site_config_loads() -> None:
    site = load_config(CONFIG_DIR / "site.yaml", SiteConfig)
    assert site.id == "riverside"
    assert site.timezone == "Europe/Berlin" and site.zone.key == "Europe/Berlin"
    assert site.holidays == [date(2026, 12, 24), date(2026, 12, 25)]
    assert set(site.schedules) == {"school-day", "evening-classes"}
    assert site.schedules["school-day"] == [
        WeeklyWindow(days=frozenset(range(5)), start=time(7, 30), end=time(18, 0))
    ]
    assert site.schedules["evening-classes"][1].days == frozenset({5})
    assert [room.id for room in site.buildings[0].rooms] == ["A-101", "A-204", "A-GATE"]
    assert site.tariff.energy_per_kwh == pytest.approx(0.32)


def test_shipped_agent_config_loads() -> None:
    agent = load_config(CONFIG_DIR / "agent.yaml", AgentConfig)
    assert (agent.id, agent.site) == ("agent-a", "riverside")
    assert agent.broker.port == 1883 and agent.device_broker is None
    assert [type(d) for d in agent.devices] == [PatrolLineDevice, MqttJsonDevice]
    reader, meter = agent.devices
    assert isinstance(reader, PatrolLineDevice) and reader.port == "/dev/ttyUSB0" and reader.baudrate == 9600
    assert isinstance(meter, MqttJsonDevice)
    assert meter.fields["energy_kwh"].quantity is Quantity.ENERGY and meter.fields["energy_kwh"].cumulative


def test_shipped_gateway_config_loads_and_its_site_file_too() -> None:
    gateway = load_config(CONFIG_DIR / "gateway.yaml", GatewayConfig)
    assert isinstance(gateway.historian, SqliteHistorianConfig)
    assert gateway.api.port == 8080
    assert gateway.rules.ac_after_hours.grace_minutes == 15
    assert load_config(gateway.site_file, SiteConfig).id == "riverside"


def test_shipped_configs_do_not_depend_on_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    agent = load_config(CONFIG_DIR / "agent.yaml", AgentConfig)
    gateway = load_config(CONFIG_DIR / "gateway.yaml", GatewayConfig)
    assert agent.buffer_path == CONFIG_DIR / "data" / "agent-a-outbox.db"
    assert gateway.site_file == CONFIG_DIR / "site.yaml"
    assert gateway.state_db == CONFIG_DIR / "data" / "state.db"
    assert isinstance(gateway.historian, SqliteHistorianConfig)
    assert gateway.historian.path == CONFIG_DIR / "data" / "history.db"


def test_site_round_trips_through_its_written_form() -> None:
    site = load_config(CONFIG_DIR / "site.yaml", SiteConfig)
    dumped = site.model_dump(mode="json")
    assert dumped["schedules"]["evening-classes"][1] == {"days": "sat", "hours": "09:00-13:00"}
    assert SiteConfig.model_validate(yaml.safe_load(yaml.safe_dump(dumped))) == site


# --------------------------------------------------------------------------- paths, formats


def test_relative_paths_resolve_against_the_files_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "etc" / "warden"
    folder.mkdir(parents=True)
    path = write(
        folder,
        "agent.yaml",
        AGENT_YAML + "buffer_path: data/outbox.db\nbroker: {tls_ca_file: certs/ca.crt}\n",
    )
    monkeypatch.chdir(tmp_path)
    agent = load_config(path, AgentConfig)
    assert agent.buffer_path == folder / "data" / "outbox.db"
    assert agent.broker.tls_ca_file == folder / "certs" / "ca.crt"


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    absolute = tmp_path / "elsewhere" / "outbox.db"
    agent = load_config(write(tmp_path, "agent.yaml", AGENT_YAML + f"buffer_path: {absolute}\n"), AgentConfig)
    assert agent.buffer_path == absolute


def test_device_ports_are_not_treated_as_paths(tmp_path: Path) -> None:
    text = AGENT_YAML.replace("/dev/ttyUSB0", "socket://10.0.0.5:4001")
    [device] = load_config(write(tmp_path, "agent.yaml", text), AgentConfig).devices
    assert isinstance(device, PatrolLineDevice) and device.port == "socket://10.0.0.5:4001"


def test_toml_works_like_yaml(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "agent.toml",
        """\
id = "agent-b"
site = "riverside"
buffer_path = "spool/outbox.db"

[broker]
host = "10.0.0.2"
port = 8883

[[devices]]
driver = "patrol_line"
id = "patrol-reader-2"
port = "rfc2217://10.0.0.5:4001"
baudrate = 19200

[[devices]]
driver = "mqtt_json"
id = "ac-b101"
topic = "devices/riverside/ac-b101/state"
fields = { power_w = { quantity = "power", unit = "W" } }
""",
    )
    agent = load_config(path, AgentConfig)
    assert agent.id == "agent-b"
    assert agent.broker.host == "10.0.0.2" and agent.broker.port == 8883
    assert agent.buffer_path == tmp_path / "spool" / "outbox.db"
    assert [d.id for d in agent.devices] == ["patrol-reader-2", "ac-b101"]
    assert isinstance(agent.devices[0], PatrolLineDevice) and agent.devices[0].baudrate == 19200


def test_toml_and_yaml_of_the_same_site_are_equal(tmp_path: Path) -> None:
    toml_path = write(
        tmp_path,
        "site.toml",
        """\
id = "riverside"
timezone = "Europe/Berlin"

[[schedules.school-day]]
days = "mon-fri"
hours = "07:30-18:00"

[[buildings]]
id = "A"
rooms = [{ id = "A-101", schedule = "school-day", devices = ["ac-a101"] }]
""",
    )
    yaml_path = write(tmp_path, "site.yml", SITE_YAML)
    assert load_config(toml_path, SiteConfig) == load_config(yaml_path, SiteConfig)


def test_toml_error_names_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "agent.toml", 'id = "a"\nsite = "s"\n[[devices]]\ndriver = "patrol_line"\nid = "p"\nport = "x"\nbaudrate = "fast"\n')
    assert "devices[0].baudrate" in config_error(path, AgentConfig)


# --------------------------------------------------------------------------- file-level errors


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert config_error(path, AgentConfig) == f"{path}: file not found"


def test_wrong_extension(tmp_path: Path) -> None:
    path = write(tmp_path, "agent.json", '{"id": "a"}')
    message = config_error(path, AgentConfig)
    assert ".yaml" in message and ".toml" in message


def test_invalid_yaml_syntax(tmp_path: Path) -> None:
    path = write(tmp_path, "agent.yaml", "id: [agent-a\nsite: riverside\n")
    message = config_error(path, AgentConfig)
    assert message.startswith(f"{path}: not valid YAML: line 2, column 5: ")
    assert "<unicode string>" not in message and len(message.splitlines()) == 1


@pytest.mark.parametrize(
    "text", ["id: a\n  site: riverside\n", "id: a\n\tsite: s\n", "id: !!python/object:os.system x\n", "id: !!int abc\n"]
)
def test_other_yaml_errors_are_config_errors(tmp_path: Path, text: str) -> None:
    message = config_error(write(tmp_path, "agent.yaml", text), AgentConfig)
    assert "not valid YAML" in message and len(message.splitlines()) == 1


def test_impossible_date_is_a_config_error(tmp_path: Path) -> None:
    # PyYAML (and tomllib) turn 2026-02-30 into a date themselves and fail with ValueError.
    path = write(tmp_path, "site.yaml", SITE_YAML + "holidays: [2026-02-30]\n")
    assert "day is out of range" in config_error(path, SiteConfig)
    toml = write(tmp_path, "site.toml", 'id = "r"\ntimezone = "UTC"\nholidays = [2026-02-30]\n')
    assert "not valid TOML" in config_error(toml, SiteConfig)


def test_self_referencing_yaml_alias(tmp_path: Path) -> None:
    path = write(tmp_path, "site.yaml", "id: r\ntimezone: UTC\nholidays: &a [*a]\n")
    assert "nested too deeply" in config_error(path, SiteConfig)


def test_invalid_toml_syntax(tmp_path: Path) -> None:
    path = write(tmp_path, "agent.toml", "id = [\n")
    assert config_error(path, AgentConfig).startswith(f"{path}: not valid TOML")


def test_invalid_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_bytes(b"id: agent-\xff\n")
    assert "cannot read" in config_error(path, AgentConfig)


@pytest.mark.parametrize("text", ["- id: agent-a\n- site: riverside\n", "just a string\n", ""])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    message = config_error(write(tmp_path, "agent.yaml", text), AgentConfig)
    assert "expected a mapping" in message


# --------------------------------------------------------------------------- key-level errors


def test_unknown_key(tmp_path: Path) -> None:
    path = write(tmp_path, "agent.yaml", AGENT_YAML + "heartbeat_secs: 30\n")
    assert config_error(path, AgentConfig) == f"{path}: heartbeat_secs: unknown key (check its spelling)"


def test_unknown_nested_key(tmp_path: Path) -> None:
    path = write(tmp_path, "agent.yaml", AGENT_YAML + "    baud: 9600\n")
    message = config_error(path, AgentConfig)
    assert "devices[0].baud" in message and "unknown key" in message


def test_missing_required_key(tmp_path: Path) -> None:
    path = write(tmp_path, "agent.yaml", AGENT_YAML.replace("site: riverside\n", ""))
    assert config_error(path, AgentConfig) == f"{path}: site: required key is missing"


def test_missing_required_nested_key(tmp_path: Path) -> None:
    path = write(tmp_path, "agent.yaml", AGENT_YAML.replace("    port: /dev/ttyUSB0\n", ""))
    assert config_error(path, AgentConfig) == f"{path}: devices[0].port: required key is missing"


def test_wrong_type(tmp_path: Path) -> None:
    path = write(tmp_path, "agent.yaml", AGENT_YAML + "broker:\n  port: abc\n")
    message = config_error(path, AgentConfig)
    assert "broker.port" in message
    assert "'abc'" in message
    assert "integer" in message


def test_wrong_type_in_a_list(tmp_path: Path) -> None:
    path = write(tmp_path, "agent.yaml", AGENT_YAML + "    baudrate: fast\n")
    message = config_error(path, AgentConfig)
    assert message.startswith(f"{path}: devices[0].baudrate: expected a valid integer")
    assert message.endswith("got 'fast'")


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_port_out_of_range(tmp_path: Path, port: int) -> None:
    path = write(tmp_path, "agent.yaml", AGENT_YAML + f"broker:\n  port: {port}\n")
    message = config_error(path, AgentConfig)
    assert "broker.port" in message and str(port) in message
    assert "65535" in message or "greater than or equal to 1" in message


def test_several_errors_are_all_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "agent.yaml", AGENT_YAML + "broker: {port: abc}\nheartbeat_seconds: -1\n")
    message = config_error(path, AgentConfig)
    assert len(message.splitlines()) == 2
    assert "broker.port" in message and "heartbeat_seconds" in message


def test_unknown_driver_tag(tmp_path: Path) -> None:
    path = write(tmp_path, "agent.yaml", AGENT_YAML.replace("patrol_line", "bacnet_ip"))
    message = config_error(path, AgentConfig)
    assert "devices[0]" in message
    for known in ("patrol_line", "mqtt_json", "modbus_rtu", "patrol_wand"):
        assert f"'{known}'" in message
    assert "'bacnet_ip'" in message


def test_modbus_errors_name_the_register_key(tmp_path: Path) -> None:
    text = AGENT_YAML + (
        "  - driver: modbus_rtu\n    id: m1\n    port: /dev/ttyUSB1\n    registers:\n"
        "      - {name: p, address: 12, quantity: power, unit: W, word_order: middle}\n"
        "  - driver: modbus_rtu\n    id: m2\n    port: /dev/ttyUSB2\n    registers: sdm12\n"
    )
    message = config_error(write(tmp_path, "agent.yaml", text), AgentConfig)
    assert "devices[1].registers[0].word_order: expected 'big' or 'little', got 'middle'" in message
    assert "devices[2]: registers: unknown preset 'sdm12' (known: sdm120)" in message


def test_wand_spool_dir_resolves_against_the_files_folder(tmp_path: Path) -> None:
    text = AGENT_YAML + "  - driver: patrol_wand\n    id: dock-1\n    spool_dir: spool\n"
    agent = load_config(write(tmp_path, "agent.yaml", text), AgentConfig)
    dock = agent.devices[1]
    assert isinstance(dock, PatrolWandDevice) and dock.spool_dir == tmp_path / "spool"


def test_reconnect_delays_must_be_ordered(tmp_path: Path) -> None:
    text = AGENT_YAML + "broker: {reconnect_min_seconds: 10, reconnect_max_seconds: 1}\n"
    message = config_error(write(tmp_path, "agent.yaml", text), AgentConfig)
    assert "broker: reconnect_max_seconds: must not be less than reconnect_min_seconds" in message


def test_the_commented_device_examples_in_the_shipped_agent_config_are_valid(tmp_path: Path) -> None:
    """Uncommenting an example must give a working config, not a start-up error."""
    lines, in_example = [], False
    for line in (CONFIG_DIR / "agent.yaml").read_text().splitlines():
        in_example = line.startswith("  # - ") or (in_example and line.startswith("  #   "))
        lines.append(line.replace("  # ", "  ", 1) if in_example else line)
    path = write(tmp_path, "agent.yaml", "\n".join(lines) + "\n")
    agent = load_config(path, AgentConfig)
    kinds = [type(d) for d in agent.devices]
    assert kinds == [PatrolLineDevice, MqttJsonDevice, ModbusRtuDevice, ModbusRtuDevice, PatrolWandDevice]
    sdm, other, dock = agent.devices[2:]
    assert isinstance(sdm, ModbusRtuDevice) and [r.name for r in sdm.registers] == ["active_power", "import_energy"]
    assert isinstance(other, ModbusRtuDevice) and other.registers[1].word_order == "little"
    assert isinstance(dock, PatrolWandDevice) and dock.spool_dir == tmp_path / "data" / "wand-spool"


def test_missing_driver_tag(tmp_path: Path) -> None:
    path = write(tmp_path, "agent.yaml", AGENT_YAML.replace("  - driver: patrol_line\n    id:", "  - id:"))
    message = config_error(path, AgentConfig)
    assert "devices[0]" in message and "driver" in message and "missing" in message


def test_unknown_historian_type(tmp_path: Path) -> None:
    path = write(tmp_path, "gateway.yaml", "site_file: site.yaml\nhistorian: {type: mongodb}\n")
    message = config_error(path, GatewayConfig)
    assert "historian" in message and "'sqlite'" in message and "'influxdb'" in message


def test_influx_historian_requires_url_and_bucket(tmp_path: Path) -> None:
    path = write(tmp_path, "gateway.yaml", "site_file: site.yaml\nhistorian: {type: influxdb}\n")
    message = config_error(path, GatewayConfig)
    assert f"{path}: historian.url: required key is missing" in message.splitlines()
    assert f"{path}: historian.bucket: required key is missing" in message.splitlines()
    ok = write(tmp_path, "ok.yaml", "site_file: site.yaml\nhistorian: {type: influxdb, url: 'http://h:8086', bucket: b}\n")
    assert isinstance(load_config(ok, GatewayConfig).historian, InfluxHistorianConfig)


def test_duplicate_device_ids_in_an_agent(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "agent.yaml",
        AGENT_YAML + "  - driver: patrol_line\n    id: patrol-reader-1\n    port: /dev/ttyUSB1\n",
    )
    message = config_error(path, AgentConfig)
    assert "devices" in message and "unique" in message and "patrol-reader-1" in message


def test_agent_needs_a_device(tmp_path: Path) -> None:
    path = write(tmp_path, "agent.yaml", "id: a\nsite: s\ndevices: []\n")
    assert "devices" in config_error(path, AgentConfig)


def test_bad_identifier(tmp_path: Path) -> None:
    path = write(tmp_path, "agent.yaml", AGENT_YAML.replace("id: agent-a", "id: 'agent a/1'"))
    message = config_error(path, AgentConfig)
    assert message.startswith(f"{path}: id: ") and "'agent a/1'" in message


# --------------------------------------------------------------------------- site errors


@pytest.mark.parametrize("zone", ["Mars/Olympus", "Europe/", "/etc/localtime", "Europe"])
def test_bad_time_zone(tmp_path: Path, zone: str) -> None:
    path = write(tmp_path, "site.yaml", SITE_YAML.replace("Europe/Berlin", zone))
    message = config_error(path, SiteConfig)
    assert message.startswith(f"{path}: timezone: expected an IANA time zone")
    assert repr(zone) in message


def test_unknown_schedule_referenced_by_a_room(tmp_path: Path) -> None:
    path = write(tmp_path, "site.yaml", SITE_YAML.replace("schedule: school-day", "schedule: night-shift"))
    message = config_error(path, SiteConfig)
    assert "buildings[0].rooms[0].schedule" in message
    assert "'night-shift'" in message and "school-day" in message


def test_same_device_in_two_rooms(tmp_path: Path) -> None:
    path = write(tmp_path, "site.yaml", SITE_YAML + "      - {id: A-102, devices: [ac-a102, ac-a101]}\n")
    message = config_error(path, SiteConfig)
    assert "buildings[0].rooms[1].devices" in message
    assert "'ac-a101'" in message and "A-101" in message


def test_same_device_in_two_buildings(tmp_path: Path) -> None:
    path = write(tmp_path, "site.yaml", SITE_YAML + "  - id: B\n    rooms:\n      - {id: B-1, devices: [ac-a101]}\n")
    assert "buildings[1].rooms[0].devices" in config_error(path, SiteConfig)


@pytest.mark.parametrize("hours", ["25:00-26:00", "07:60-08:00", "07:00-24:30", "7-18", "07:00", ""])
def test_bad_schedule_hours(tmp_path: Path, hours: str) -> None:
    path = write(tmp_path, "site.yaml", SITE_YAML.replace('"07:30-18:00"', f'"{hours}"'))
    message = config_error(path, SiteConfig)
    assert "schedules.school-day[0]" in message
    assert "expected hours like" in message and repr(hours) in message


@pytest.mark.parametrize("days", ["funday", "mon-funday", "mon-", "monday"])
def test_bad_schedule_days(tmp_path: Path, days: str) -> None:
    path = write(tmp_path, "site.yaml", SITE_YAML.replace("days: mon-fri", f"days: {days}"))
    message = config_error(path, SiteConfig)
    assert "schedules.school-day[0]" in message
    assert "expected weekdays like" in message


@pytest.mark.parametrize("key", ["days", "hours"])
def test_schedule_window_missing_key(tmp_path: Path, key: str) -> None:
    window = {"days": "days: mon-fri, ", "hours": 'hours: "07:30-18:00"'}
    path = write(tmp_path, "site.yaml", SITE_YAML.replace(window[key], "").replace("{, ", "{"))
    message = config_error(path, SiteConfig)
    assert "schedules.school-day[0]" in message and key in message and "missing" in message
    assert "start" not in message and "end" not in message  # internal field names


def test_bad_holiday(tmp_path: Path) -> None:
    path = write(tmp_path, "site.yaml", SITE_YAML + "holidays: [christmas]\n")
    message = config_error(path, SiteConfig)
    assert "holidays[0]" in message and "'christmas'" in message


# --------------------------------------------------------------------------- site model


def test_locate() -> None:
    site = load_config(CONFIG_DIR / "site.yaml", SiteConfig)
    assert site.locate("ac-a204") == DeviceLocation(building="A", room="A-204", schedule="evening-classes")
    assert site.locate("ac-a101") == DeviceLocation(building="A", room="A-101", schedule="school-day")
    assert site.locate("patrol-reader-1") == DeviceLocation(building="A", room="A-GATE", schedule=None)
    assert site.locate("ac-z999") is None


def window(days: object, hours: str) -> WeeklyWindow:
    return WeeklyWindow.model_validate({"days": days, "hours": hours})


@pytest.mark.parametrize(
    ("days", "expected"),
    [
        ("mon-fri", {0, 1, 2, 3, 4}),
        ("sat,sun", {5, 6}),
        ("fri-mon", {4, 5, 6, 0}),
        ("sun-sun", {6}),
        ("Mon - Wed, SAT", {0, 1, 2, 5}),
        (["mon", "wed-thu"], {0, 2, 3}),
        ("mon-sun", set(range(7))),
    ],
)
def test_weekly_window_days(days: object, expected: set[int]) -> None:
    assert window(days, "08:00-09:00").days == frozenset(expected)


@pytest.mark.parametrize(
    ("hours", "start", "end"),
    [
        ("07:30-18:00", time(7, 30), time(18, 0)),
        ("22:00-06:00", time(22, 0), time(6, 0)),
        ("00:00-24:00", time(0, 0), None),
        ("18:00-24:00", time(18, 0), None),
        ("7:05-9:00", time(7, 5), time(9, 0)),
        ("07:30 - 18:00", time(7, 30), time(18, 0)),
    ],
)
def test_weekly_window_hours(hours: str, start: time, end: time | None) -> None:
    parsed = window("mon", hours)
    assert (parsed.start, parsed.end) == (start, end)


@pytest.mark.parametrize(
    ("days", "hours", "written"),
    [
        ("mon-fri", "07:30-18:00", {"days": "mon,tue,wed,thu,fri", "hours": "07:30-18:00"}),
        ("sat,sun", "22:00-06:00", {"days": "sat,sun", "hours": "22:00-06:00"}),
        ("fri-mon", "00:00-24:00", {"days": "mon,fri,sat,sun", "hours": "00:00-24:00"}),
        ("wed", "7:05-9:00", {"days": "wed", "hours": "07:05-09:00"}),
    ],
)
def test_weekly_window_serialises_to_the_written_form(days: str, hours: str, written: dict[str, str]) -> None:
    parsed = window(days, hours)
    assert parsed.model_dump() == written
    assert parsed.model_dump(mode="json") == written
    assert WeeklyWindow.model_validate(parsed.model_dump()) == parsed
    assert WeeklyWindow.model_validate_json(parsed.model_dump_json()) == parsed


def test_weekly_window_built_in_code_is_not_reparsed() -> None:
    built = WeeklyWindow(days=frozenset({0, 1}), start=time(8), end=None)
    assert built.model_dump() == {"days": "mon,tue", "hours": "08:00-24:00"}
    assert window("mon-tue", "08:00-24:00") == built
