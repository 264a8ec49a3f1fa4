"""Which agent may speak for which device (issue 17: one agent must not speak for another's).

An event's agent is the one in its topic, which the broker's ACL binds to the agent's
account (deploy/acl). The gateway then accepts an event only from the agent that serves its
device:

- a device listed under `rules.deadman.agents` (agent id -> its devices) belongs to that
  agent alone;
- an agent always speaks for itself (its availability and heartbeat carry its own id as the
  device), and no other agent may use an agent's id as a device;
- any other device belongs to the first agent heard speaking for it since the gateway
  started (trust on first use): demos and sites that list no agents keep working, and a
  second agent is still refused. The configuration is the hard guarantee; learning can be
  beaten by an agent that speaks first after a gateway restart.
"""

from __future__ import annotations

from rules.deadman import DeadmanConfig


class DeviceOwners:
    """Decides, and remembers, which agent serves each device. Used by the ingest worker only."""

    def __init__(self, deadman: DeadmanConfig) -> None:
        self._configured = {device: agent for agent, devices in deadman.agents.items() for device in devices}
        self._agents: set[str] = set(deadman.agents)
        self._learned: dict[str, str] = {}

    def owner(self, agent: str, device: str) -> str | None:
        """The agent that serves `device`, as heard from `agent`; None when `agent` does."""
        self._agents.add(agent)
        if device == agent:
            return None
        configured = self._configured.get(device)
        if configured is not None:
            return None if configured == agent else configured
        if device in self._agents:
            return device  # another agent's own id
        learned = self._learned.setdefault(device, agent)
        return None if learned == agent else learned
