"""Silent devices: no event from a device for longer than it is expected to stay quiet.

One alert per device, resolved when it speaks again. When a whole agent goes away (its
status says offline, or every device it serves falls silent together) there is one agent
alert instead, and its devices' own alerts are held back: fifty identical alerts would
hide the one fact that matters. Silence is judged on ticks against the event time of each
device's newest event, so late or replayed data never makes a device look silent.

Events do not name their agent. The mapping comes from the configuration (`agents`), or
from the gateway, which knows each event's agent from its MQTT topic (`learn_agent`).
Devices with no known agent are held back while any agent with no known devices is offline.

A campus behind a bridged broker (deploy/bridge/) can lose its WAN link while its agents
work on and its broker holds their data. The gateway feeds the bridge's up/down facts
(`on_link`, on its own clock): while the link is down, silence that began after the cut is
not judged; once it is back, such silence counts from the link's return, so the backlog has
time to arrive. The cut itself is one `site_link_down` warning once it outlasts a grace.
See docs/rules.md#deadman.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import Field

from rules import state
from rules.alerts import AlertSignal, Severity, SignalAction
from rules.schedule import wall_clock
from warden.config import SiteConfig, StrictModel
from warden.events import EVENT_KINDS, DeviceState, DeviceStatus, Event, Identifier
from warden.i18n import Message, minutes_text

SNAPSHOT_VERSION = 1

DEVICE = "deadman"
AGENT = "deadman_agent"
LINK = "site_link_down"

#: Devices of one agent whose silences began within this share of their shortest interval
#: of each other fell silent together: the agent's silence, one alert.
TOGETHER_SHARE = 1 / 3


#: The alert rules this family emits (rules/config.py: ALERT_RULES).
RULE_NAMES = (DEVICE, AGENT, LINK)


class DeadmanConfig(StrictModel):
    """Silent devices and agents (rules/deadman.py). Minutes; null: that kind is not watched."""

    enabled: bool = True
    reading_minutes: float | None = Field(default=15.0, gt=0)
    status_minutes: float | None = Field(default=5.0, gt=0)
    door_minutes: float | None = Field(default=None, gt=0)
    patrol_tap_minutes: float | None = Field(default=None, gt=0)
    heartbeats_count: bool = False  # the agent heartbeats for every device it serves, silent or not
    agent_offline_minutes: float = Field(
        default=5.0, ge=0, description="An agent's offline status raises only once it lasted this long (0: at once); "
        "a broker restart fires every agent's will and they are back seconds later"
    )
    devices: dict[Identifier, Annotated[float, Field(gt=0)] | None] = Field(
        default_factory=dict, description="Per-device minutes; null: not watched"
    )
    agents: dict[Identifier, list[Identifier]] = Field(default_factory=dict, description="Agent id -> its devices")
    link_down_minutes: float = Field(
        default=10.0, ge=0, description="A campus bridge down this long raises site_link_down (0: at once); "
        "a shorter blip pages no one"
    )


@dataclass
class _Device:
    last: datetime | None = None  # newest event time
    kinds: set[str] = field(default_factory=set)
    raised: bool = False


@dataclass
class _Agent:
    status: str = ""  # last availability received: online, offline or "" (never said)
    status_at: datetime | None = None
    silent_at: datetime | None = None  # when all its devices had fallen silent, if they have
    raised: bool = False
    reason: str = ""  # offline, silent or partial (some of its devices back, the rest still silent), while raised
    still_silent: int = 0  # partial: how many of its devices are still silent
    back_at: datetime | None = None  # when its alert resolved: its devices' silence counts from here
    offline_seen: datetime | None = None  # event time when its offline status arrived


@dataclass
class _Link:
    """The site's campus bridge as the gateway last heard it, on the gateway's clock."""

    down_at: datetime | None = None  # start of the latest cut
    up_at: datetime | None = None  # its end; None while the link is down
    alert: str = ""  # the cut's site_link_down: "" not raised, "open", "done" (resolved)

    @property
    def down(self) -> bool:
        return self.down_at is not None and self.up_at is None


class DeadmanRule:
    """One alert per silent device, one per absent agent, never both for the same silence."""

    name = "deadman"
    reads = frozenset(EVENT_KINDS)

    def __init__(self, site: SiteConfig, config: DeadmanConfig, lateness: timedelta = timedelta(0)) -> None:
        """`lateness`: how far ticks lag the gateway's clock (the rules' allowed lateness),
        so the link's grace is measured on the clock its facts carry."""
        self._site = site
        self._config = config
        self._kind_minutes = {
            "reading": config.reading_minutes,
            "status": config.status_minutes,
            "door": config.door_minutes,
            "patrol_tap": config.patrol_tap_minutes,
        }
        self._configured_agent = {device: agent for agent, devices in config.agents.items() for device in devices}
        self._learned_agent: dict[str, str] = {}
        self._devices: dict[str, _Device] = {}
        self._agents: dict[str, _Agent] = {agent: _Agent() for agent in config.agents}
        self._since: datetime | None = None  # first tick: configured devices never heard count from here
        self._newest: datetime | None = None
        self._offline_grace = timedelta(minutes=config.agent_offline_minutes)
        self._link = _Link()  # a site with no bridge never hears of one: judged as always
        self._link_grace = timedelta(minutes=config.link_down_minutes)
        self._lateness = lateness
        self.stats: dict[str, int] = {"agent_status": 0, "held_back": 0, "held_by_link": 0, "awaiting_agent": 0}

    def learn_agent(self, device: str, agent: str) -> None:
        """The gateway saw `device`'s events on `agent`'s topic; the configuration wins."""
        if device != agent and device not in self._configured_agent:
            self._learned_agent[device] = agent
            self._agents.setdefault(agent, _Agent())

    def on_link(self, up: bool, at: datetime) -> None:
        """The campus bridge went up or down at `at` (gateway clock). Repeats (the retained
        state at each reconnect) change nothing; a new cut forgets the one before."""
        link = self._link
        if up and link.down:
            link.up_at = at
        elif not up and not link.down:
            self._link = _Link(down_at=at)

    def latest_cut(self) -> tuple[datetime, datetime | None] | None:
        """The latest campus cut (start, end; end None while down); None: never cut."""
        link = self._link
        return None if link.down_at is None else (link.down_at, link.up_at)

    # ----------------------------------------------------------------- Rule protocol

    def on_event(self, event: Event) -> list[AlertSignal]:
        self._newest = max(self._newest or event.event_time, event.event_time)
        if isinstance(event, DeviceStatus):
            heartbeat = event.state is DeviceState.HEARTBEAT
            if not heartbeat and self._is_agent(event.device):
                return self._agent_status(event)
            if heartbeat and not self._config.heartbeats_count:
                return []
        device = self._devices.setdefault(event.device, _Device())
        device.kinds.add(event.kind)
        previous = device.last
        if previous is not None and event.event_time <= previous:
            return []
        device.last = event.event_time
        if not device.raised:
            return []
        device.raised = False
        minutes = (event.event_time - previous).total_seconds() / 60 if previous else 0.0
        spoke = wall_clock(self._site, event.event_time, ref=event.event_time)
        message = Message("Device {device} spoke again at {time}", device=event.device, time=spoke)
        if previous:
            message = Message("Device {device} spoke again at {time} after {silence} of silence", device=event.device,
                              time=spoke, silence=_duration(minutes))
        return [self._device_signal(SignalAction.RESOLVE, event.device, event.event_time, message, minutes)]

    def on_tick(self, now: datetime) -> list[AlertSignal]:
        """Judge agents first, then the devices they do not account for."""
        if self._since is None:
            self._since = now
        for device, minutes in self._config.devices.items():
            if minutes is not None:
                self._devices.setdefault(device, _Device())
        signals = self._judge_link(now)
        for agent_id in sorted(self._agents):
            agent = self._agents[agent_id]
            agent.silent_at = self._all_silent(agent_id, now)
            signals += self._sync_agent(agent_id, agent, now)
        together: dict[str, tuple[datetime, timedelta] | None] = {}  # per agent, once a tick: not devices²
        for device_id in sorted(self._devices):
            signals += self._judge_device(device_id, self._devices[device_id], now, together)
        return signals

    # ----------------------------------------------------------------- devices

    def _judge_device(
        self, device_id: str, device: _Device, now: datetime, together: dict[str, tuple[datetime, timedelta] | None]
    ) -> list[AlertSignal]:
        """`together`: _together per agent, filled as needed (a device's judgement changes none)."""
        interval = self._interval(device_id, device)
        if interval is None or device.raised:
            return []
        deadline = self._past_the_cut(self._anchor(device_id, device) + interval, interval)
        if deadline is None or now < deadline:
            return []
        if self._held_back(device_id):
            self.stats["held_back"] += 1
            return []
        if self._awaits_its_agent(device_id, deadline, together):
            self.stats["awaiting_agent"] += 1
            return []
        device.raised = True
        minutes = interval.total_seconds() / 60
        since = (Message("since {time}", time=wall_clock(self._site, device.last, ref=deadline)) if device.last
                 else Message("at all"))
        message = Message("No data from device {device} {since} (expected at least every {interval})", device=device_id,
                          since=since, interval=_duration(minutes))
        return [self._device_signal(SignalAction.RAISE, device_id, deadline, message, minutes)]

    def _interval(self, device_id: str, device: _Device) -> timedelta | None:
        """Per-device setting, else the shortest default among the kinds of events it sent."""
        if device_id in self._config.devices:
            minutes = self._config.devices[device_id]
        else:
            known = [m for kind in device.kinds if (m := self._kind_minutes.get(kind)) is not None]
            minutes = min(known) if known else None
        return None if minutes is None else timedelta(minutes=minutes)

    def _anchor(self, device_id: str, device: _Device) -> datetime:
        """Silence counts from the newest event, or from the agent's return if later, and
        never from before the rule first saw time: a fresh gateway fed old data does not
        call every device silent at once."""
        assert self._since is not None
        return max(t for t in (device.last, self._back_at(device_id), self._since) if t is not None)

    def _agent_of(self, device_id: str) -> str | None:
        return self._configured_agent.get(device_id) or self._learned_agent.get(device_id)

    def _held_back(self, device_id: str) -> bool:
        agent = self._agent_of(device_id)
        if agent is not None:
            return self._agents[agent].raised
        return any(a.status == "offline" for a_id, a in self._agents.items() if not self._has_devices(a_id))

    def _awaits_its_agent(
        self, device_id: str, deadline: datetime, together: dict[str, tuple[datetime, timedelta] | None]
    ) -> bool:
        """An agent's devices never fall silent at one instant: a poll cycle or a reporting
        period spreads their last readings over seconds or a minute. A due device whose
        agent's other devices spoke last within TOGETHER_SHARE of the shortest interval waits
        for the agent's judgement (one alert, `_all_silent`), instead of paging on its own
        ahead of it; one whose fellows spoke later than that is alone in its silence."""
        agent = self._agent_of(device_id)
        if agent is None:
            return False
        if agent not in together:
            together[agent] = self._together(agent)
        fellows = together[agent]
        if fellows is None:
            return False
        newest, shortest = fellows
        return newest + shortest <= deadline + shortest * TOGETHER_SHARE

    def _together(self, agent_id: str) -> tuple[datetime, timedelta] | None:
        """For an agent with two or more watched devices: the newest anchor among them and
        their shortest interval (all silent from newest + shortest); else None."""
        watched = self._watched(agent_id)
        if len(watched) < 2:
            return None
        return max(self._anchor(d, dev) for d, dev, _ in watched), min(i for _, _, i in watched)

    def _watched(self, agent_id: str) -> list[tuple[str, _Device, timedelta]]:
        """The agent's devices whose silence is watched, with their intervals."""
        return [(d, dev, i) for d in sorted(self._devices)
                if self._agent_of(d) == agent_id and (i := self._interval(d, dev := self._devices[d])) is not None]

    def _back_at(self, device_id: str) -> datetime | None:
        """When the device's agent last came back (for a device of no known agent: any
        agent of no known devices)."""
        agent = self._agent_of(device_id)
        if agent:
            agents = [self._agents[agent]]
        else:
            agents = [a for a_id, a in self._agents.items() if not self._has_devices(a_id)]
        times = [t for a in agents for t in (a.back_at, a.status_at if a.status == "online" else None) if t]
        return max(times) if times else None

    def _device_signal(
        self, action: SignalAction, device_id: str, at: datetime, message: str, minutes: float
    ) -> AlertSignal:
        device = self._devices[device_id]
        details: dict[str, float | str] = {"device": device_id, "minutes": round(minutes, 2)}
        if device.last:
            details["last_event"] = device.last.isoformat()
        if agent := self._agent_of(device_id):
            details["agent"] = agent
        if place := self._site.locate(device_id):
            details.update(building=place.building, room=place.room)
        return AlertSignal(self._site.id, DEVICE, device_id, action, at, Severity.WARNING, message, details)

    # ----------------------------------------------------------------- agents

    def _is_agent(self, device_id: str) -> bool:
        """Availability from something that is not a site device is an agent's."""
        if device_id in self._config.agents:
            return True
        known = (self._configured_agent, self._learned_agent, self._config.devices)
        known_device = any(device_id in devices for devices in known)
        return not known_device and self._site.locate(device_id) is None

    def _agent_status(self, event: DeviceStatus) -> list[AlertSignal]:
        """Taken in arrival order: an MQTT will carries the time it was set, not when it fired."""
        self.stats["agent_status"] += 1
        agent = self._agents.setdefault(event.device, _Agent())
        agent.status, agent.status_at = event.state.value, event.event_time
        agent.offline_seen = self._newest if event.state is DeviceState.OFFLINE else None
        if event.state is DeviceState.ONLINE:
            agent.silent_at = None  # its devices get a fresh interval from now; the next tick judges them
        assert self._newest is not None
        return self._sync_agent(event.device, agent, self._newest)

    def _all_silent(self, agent_id: str, now: datetime) -> datetime | None:
        """When every device of the agent (two or more) had been silent for the shortest
        interval among them, if they all still are."""
        together = self._together(agent_id)
        if together is None:
            return None
        newest, shortest = together
        silent_at = self._past_the_cut(newest + shortest, shortest)
        return silent_at if silent_at is not None and now >= silent_at else None

    def _offline_due(self, agent: _Agent, now: datetime) -> bool:
        """Offline long enough to say so: a broker restart fires every agent's will, and the
        agents are back a few seconds later (agent_offline_minutes; 0: at once)."""
        if agent.status != "offline":
            return False
        if not self._offline_grace or agent.offline_seen is None:
            return True
        return now >= agent.offline_seen + self._offline_grace

    def _sync_agent(self, agent_id: str, agent: _Agent, now: datetime) -> list[AlertSignal]:
        reason = "offline" if self._offline_due(agent, now) else ("silent" if agent.silent_at else "")
        silent = self._still_silent(agent_id, agent, now) if not reason else []
        reason = "partial" if silent else reason
        if reason == agent.reason and agent.raised == bool(reason) and len(silent) <= agent.still_silent:
            agent.still_silent = len(silent)  # fewer still silent: good news, said when all are back
            return []
        at = self._agent_time(agent_id, agent, reason)
        agent.still_silent = len(silent)
        if not reason:
            agent.raised, agent.reason, agent.back_at = False, "", at
            return [self._agent_signal(SignalAction.RESOLVE, agent_id, at, "back")]
        action = SignalAction.UPDATE if agent.raised else SignalAction.RAISE
        agent.raised, agent.reason = True, reason
        return [self._agent_signal(action, agent_id, at, reason, silent)]

    def _still_silent(self, agent_id: str, agent: _Agent, now: datetime) -> list[str]:
        """While the agent's silence alert is open and some of its devices speak again: those
        still silent. The alert stays open and names them, so a partial return is no all-clear
        followed an interval later by a page per device still dead (one alert for one outage)."""
        if not agent.raised or agent.reason not in ("silent", "partial"):
            return []
        since = self._since
        assert since is not None
        return [d for d, dev, i in self._watched(agent_id)
                if (due := self._past_the_cut(max(dev.last or since, since) + i, i)) is not None and now >= due]

    def _agent_time(self, agent_id: str, agent: _Agent, reason: str) -> datetime:
        """When the agent's condition changed, in event time."""
        if reason == "silent":
            assert agent.silent_at is not None
            return agent.silent_at
        if reason == "offline" and self._offline_grace and agent.offline_seen is not None:
            return agent.offline_seen + self._offline_grace
        candidates = [t for t in (agent.status_at, self._newest) if t is not None]
        lasts = [d.last for d_id, d in self._devices.items() if d.last and self._agent_of(d_id) == agent_id]
        if reason == "partial":  # the newest word of one of its devices: some are back
            return max(lasts, default=max(candidates))
        if not reason:  # back: its status said online, or one of its devices spoke
            online = agent.status_at if agent.status == "online" else None
            candidates = [t for t in (online, *lasts) if t] or candidates
        return max(candidates)

    def _agent_signal(
        self, action: SignalAction, agent_id: str, at: datetime, reason: str, silent: list[str] | None = None
    ) -> AlertSignal:
        devices = [d for d in self._devices if self._agent_of(d) == agent_id]
        details: dict[str, float | str] = {"agent": agent_id, "reason": reason, "devices": len(devices)}
        if reason == "partial" and silent:
            message = Message("{silent} of {count} devices of agent {agent} still silent, some back at {time}: {names}",
                              agent=agent_id, silent=len(silent), count=len(devices),
                              time=wall_clock(self._site, at, ref=at), names=", ".join(silent))
            details |= {"silent": len(silent), "silent_devices": ",".join(silent)}
        elif reason == "offline":
            message = Message("Agent {agent} offline since {time} ({count} devices known)", agent=agent_id,
                              time=wall_clock(self._site, at, ref=at), count=len(devices))
        elif reason == "silent":
            message = Message("All {count} devices of agent {agent} silent since {time}", agent=agent_id,
                              time=wall_clock(self._site, at, ref=at), count=len(devices))
        else:
            message = Message("Agent {agent} back at {time}", agent=agent_id, time=wall_clock(self._site, at, ref=at))
        return AlertSignal(self._site.id, AGENT, agent_id, action, at, Severity.CRITICAL, message, details)

    # ----------------------------------------------------------------- the campus link

    def _past_the_cut(self, deadline: datetime, interval: timedelta) -> datetime | None:
        """A silence deadline as the latest link cut leaves it: one due by the cut's start
        stands (that silence was seen while data could arrive); a later one is not judged
        while the link is down (None), and once it is back counts from the return."""
        link = self._link
        if link.down_at is None or deadline <= link.down_at:
            return deadline
        if link.up_at is None:
            self.stats["held_by_link"] += 1
            return None
        return max(deadline, link.up_at + interval)

    def _judge_link(self, now: datetime) -> list[AlertSignal]:
        """One warning per cut that outlasts the grace, resolved when the link is back. Ticks
        lag the clock by the lateness; the grace is measured on the clock."""
        link = self._link
        if link.down_at is None or link.alert == "done":
            return []
        due = link.down_at + self._link_grace
        signals: list[AlertSignal] = []
        # Down: due once the clock (ticks + lateness) passes the grace. Back before a tick
        # saw it due (a catch-up): still said, if the cut outlasted the grace.
        outlasted = now + self._lateness >= due if link.up_at is None else link.up_at >= due
        if not link.alert and outlasted:
            link.alert = "open"
            message = Message("Link to site {site} down since {time}: its data waits at the campus", site=self._site.id,
                              time=wall_clock(self._site, link.down_at, ref=due))
            signals.append(self._link_signal(SignalAction.RAISE, due, message))
        if link.alert == "open" and link.up_at is not None:
            link.alert = "done"
            minutes = (link.up_at - link.down_at).total_seconds() / 60
            message = Message("Link to site {site} back at {time} after {silence}", site=self._site.id,
                              time=wall_clock(self._site, link.up_at, ref=link.up_at), silence=_duration(minutes))
            signals.append(self._link_signal(SignalAction.RESOLVE, link.up_at, message))
        return signals

    def _link_signal(self, action: SignalAction, at: datetime, message: str) -> AlertSignal:
        link = self._link
        assert link.down_at is not None
        details: dict[str, float | str] = {"down_at": link.down_at.isoformat()}
        if link.up_at is not None:
            details["up_at"] = link.up_at.isoformat()
            details["minutes"] = round((link.up_at - link.down_at).total_seconds() / 60, 2)
        return AlertSignal(self._site.id, LINK, self._site.id, action, at, Severity.WARNING, message, details)

    def _has_devices(self, agent_id: str) -> bool:
        return agent_id in self._config.agents or agent_id in self._learned_agent.values()

    # ----------------------------------------------------------------- persistence

    def state_snapshot(self) -> dict[str, Any]:
        return {
            "version": SNAPSHOT_VERSION,
            "since": state.dump(self._since),
            "newest": state.dump(self._newest),
            "devices": state.dump(self._devices),
            "agents": state.dump(self._agents),
            "learned_agents": dict(self._learned_agent),
            "link": state.dump(self._link),
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        state.check_version(snapshot, self.name, (SNAPSHOT_VERSION,))
        self._since = _parse(snapshot["since"])
        self._newest = _parse(snapshot["newest"])
        self._devices = {d: state.load(_Device, s) for d, s in snapshot["devices"].items()}
        self._agents = {agent: _Agent() for agent in self._config.agents}
        self._agents.update({a: state.load(_Agent, s) for a, s in snapshot["agents"].items()})
        self._learned_agent = {}
        self._link = state.load(_Link, snapshot["link"]) if snapshot.get("link") else _Link()  # older: none
        for device, agent in snapshot.get("learned_agents", {}).items():
            self.learn_agent(device, agent)


def _duration(minutes: float) -> Message:
    return minutes_text(round(minutes))


def _parse(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)
