"""The sites a gateway serves (issue 21): one site file, a list of them, or a folder, kept
to this gateway's partition by a stable hash of the site id.

The hash is SHA-256, not Python's hash(): it must be the same in every process and on
every machine, so two gateways configured as partitions 0 and 1 of 2 split the sites
between them with none served twice and none left out.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from gateway.config import GatewayConfig
from rules.config import RulesConfig
from rules.engine import build_rules
from warden.config import ConfigError, SiteConfig, load_config

#: What a site_dir's site files end with; anything else in the folder is not a site.
SITE_SUFFIXES = (".yaml", ".yml", ".toml")


@dataclass(frozen=True)
class _SiteSource:
    """Where a site comes from: its file, the key that named it and the rules it is judged by."""

    path: Path
    key: str  # e.g. "sites[1].site_file", for errors
    rules: RulesConfig
    rules_key: str  # "rules" or "sites[1].rules"


def partition_of(site_id: str, count: int) -> int:
    """The partition (0 to count - 1) a site belongs to, the same everywhere."""
    if count < 1:
        raise ValueError(f"count: expected at least 1 partition, got {count}")
    return int.from_bytes(hashlib.sha256(site_id.encode()).digest()[:8], "big") % count


def load_sites(config: GatewayConfig, origin: str | Path = "gateway config") -> list[tuple[SiteConfig, RulesConfig]]:
    """Each site this gateway serves with its rules, in configured order, after the
    partition's filter. ConfigError names the file and key; `origin` is the gateway's file."""
    loaded: list[tuple[SiteConfig, RulesConfig]] = []
    seen: dict[str, Path] = {}
    for source in _sources(config, origin):
        site = load_config(source.path, SiteConfig)
        if site.id in seen:
            raise ConfigError(
                f"{source.path}: id: {site.id!r} is also the id of {seen[site.id]}; each site needs its own id"
            )
        seen[site.id] = source.path
        _check_rules(site, source, origin)
        loaded.append((site, source.rules))
    partition = config.partition
    if partition is None:
        return loaded
    kept = [(site, rules) for site, rules in loaded if partition_of(site.id, partition.count) == partition.index]
    if not kept:
        raise ConfigError(
            f"{origin}: partition: partition {partition.index} of {partition.count} holds none of the "
            f"{len(loaded)} site(s) configured; use fewer partitions or add sites"
        )
    return kept


def _sources(config: GatewayConfig, origin: str | Path) -> list[_SiteSource]:
    if config.site_file is not None:
        return [_SiteSource(config.site_file, "site_file", config.rules, "rules")]
    if config.sites is not None:
        return [
            _SiteSource(entry.site_file, f"sites[{i}].site_file", entry.rules or config.rules,
                        f"sites[{i}].rules" if entry.rules is not None else "rules")
            for i, entry in enumerate(config.sites)
        ]  # fmt: skip
    folder = config.site_dir
    assert folder is not None  # GatewayConfig requires exactly one of the three
    if not folder.is_dir():
        raise ConfigError(f"{origin}: site_dir: {folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix in SITE_SUFFIXES and p.is_file())
    if not files:
        raise ConfigError(
            f"{origin}: site_dir: no site file ({', '.join('*' + s for s in SITE_SUFFIXES)}) in {folder}"
        )
    return [_SiteSource(path, "site_dir", config.rules, "rules") for path in files]


def _check_rules(site: SiteConfig, source: _SiteSource, origin: str | Path) -> None:
    """What the gateway would refuse at start-up (e.g. a door schedule the site lacks),
    refused here, naming the site: each site is judged by its own rules."""
    try:
        build_rules(site, source.rules)
    except ValueError as exc:
        reason = str(exc).removeprefix("rules.")
        raise ConfigError(f"{origin}: {source.rules_key}.{reason} (site {site.id!r}, {source.path})") from None
