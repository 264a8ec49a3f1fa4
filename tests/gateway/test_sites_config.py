"""A site's own `rules:` merge over the gateway's top-level ones, per family and key, and
the keys that time the gateway process may not differ per site (issue 21's leftovers).

The scenario: a district gateway whose top-level rules set the AC standby to 80 W with a
15-minute grace, a night window of 01:00-04:00, a held-open door limit of 90 s, two
watched meters with one override; Hillside (sites[1]) changes only what it names.
"""

from __future__ import annotations

from datetime import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import GatewayConfig
from gateway.sites import load_sites
from rules.config import RulesConfig
from warden.config import ConfigError, load_config

TOP_RULES: dict[str, Any] = {
    "ac_after_hours": {"standby_watts": 80, "grace_minutes": 15},
    "water": {"night_start": "01:00", "night_end": "04:00", "meters": ["wm-1", "wm-2"],
              "overrides": {"wm-1": {"burst_l_per_min": 90}}},
    "doors": {"held_open_seconds": 90},
}


def write(folder: Path, site_rules: dict[str, Any] | None, top: dict[str, Any] | None = None) -> Path:
    """Two sites, Riverside with the top-level rules and Hillside with `site_rules`."""
    for site_id in ("riverside", "hillside"):
        (folder / f"{site_id}.yaml").write_text(yaml.safe_dump({"id": site_id, "timezone": "Asia/Shanghai"}))
    hillside: dict[str, Any] = {"site_file": "hillside.yaml"}
    if site_rules is not None:
        hillside["rules"] = site_rules
    document = {"rules": TOP_RULES if top is None else top, "sites": [{"site_file": "riverside.yaml"}, hillside]}
    path = folder / "gateway.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def rules_of(path: Path) -> dict[str, RulesConfig]:
    config = load_config(path, GatewayConfig)
    return {site.id: rules for site, rules in load_sites(config, path)}


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        rules_of(path)
    return str(caught.value)


def test_a_site_changing_one_threshold_keeps_every_other_top_level_setting(tmp_path: Path) -> None:
    rules = rules_of(write(tmp_path, {"ac_after_hours": {"grace_minutes": 30}}))
    hill, river = rules["hillside"], rules["riverside"]
    assert hill.ac_after_hours.grace_minutes == 30  # its own
    assert hill.ac_after_hours.standby_watts == 80  # the same family's other key: the top level's, not the default 60
    assert (hill.water.night_start, hill.water.night_end) == (time(1, 0), time(4, 0))  # another family: the top level's
    assert hill.doors.held_open_seconds == 90
    assert hill.water.meters == ["wm-1", "wm-2"]
    assert (river.ac_after_hours.grace_minutes, river.ac_after_hours.standby_watts) == (15, 80)


def test_a_sites_list_or_map_replaces_the_top_levels_whole(tmp_path: Path) -> None:
    site = {"water": {"meters": ["wm-9"], "overrides": {"wm-9": {"min_flow_l_per_min": 1.5}}}}
    hill = rules_of(write(tmp_path, site))["hillside"]
    assert hill.water.meters == ["wm-9"]  # not wm-1, wm-2 and wm-9
    assert list(hill.water.overrides) == ["wm-9"]  # wm-1's override is the district's, not Hillside's
    assert hill.water.overrides["wm-9"].min_flow_l_per_min == 1.5
    assert hill.water.night_start == time(1, 0)  # the family's other keys still merge


def test_a_site_key_is_judged_with_the_top_levels_others(tmp_path: Path) -> None:
    """night_end 02:00 alone would meet the default night_start 02:00 (a window of nothing);
    over the top level's 01:00 it is the window 01:00-02:00."""
    hill = rules_of(write(tmp_path, {"water": {"night_end": "02:00"}}))["hillside"]
    assert (hill.water.night_start, hill.water.night_end) == (time(1, 0), time(2, 0))


def test_errors_in_a_sites_rules_name_the_file_and_the_sites_key(tmp_path: Path) -> None:
    path = write(tmp_path, {"water": {"night_flow_lpm": 3}})
    assert error_of(path).startswith(f"{path}: sites[1].rules.water.night_flow_lpm: ")
    path = write(tmp_path, {"water": {"night_end": "01:00"}})  # meets the top level's night_start
    assert error_of(path) == f"{path}: sites[1].rules.water: night_end: must differ from night_start"


def test_a_wrong_top_level_key_is_named_once_at_the_top_level(tmp_path: Path) -> None:
    path = write(tmp_path, {"ac_after_hours": {"grace_minutes": 30}}, top={"doors": {"held_open_seconds": -1}})
    message = error_of(path)
    assert message.startswith(f"{path}: rules.doors.held_open_seconds: ")
    assert "sites[" not in message


@pytest.mark.parametrize(("key", "top"), [("tick_seconds", 2.0), ("catch_up_max_seconds", 120.0),
                                          ("allowed_lateness_seconds", 300.0)])
def test_a_site_changing_the_processs_timing_is_an_error_naming_the_key(tmp_path: Path, key: str, top: float) -> None:
    """`top`: each key's default, the top level setting none of them."""
    path = write(tmp_path, {key: 7})
    assert error_of(path) == (
        f"{path}: sites[1].rules.{key}: 7 differs from the top-level rules.{key} ({top:g}); it times the gateway "
        f"process, which serves every site alike: set it under the top-level rules:"
    )


def test_a_site_repeating_the_top_levels_timing_is_accepted(tmp_path: Path) -> None:
    """A generated district writes each site's whole rules, timing included (simulators/sites.py)."""
    path = write(tmp_path, {"tick_seconds": 0.5, "doors": {"held_open_seconds": 30}},
                 top={**TOP_RULES, "tick_seconds": 0.5})
    rules = rules_of(path)
    assert rules["hillside"].tick_seconds == 0.5
    assert rules["hillside"].doors.held_open_seconds == 30
