"""`warden state copy`: a gateway's SQLite state into PostgreSQL (gateway/state_copy.py does
the copy; this reads what the gateway's config says and prints what was done)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gateway.config import GatewayConfig
from gateway.db import is_postgres_url
from gateway.lease import lease_name
from gateway.sites import load_sites
from gateway.state_copy import LeaseTarget, NeedsSite, SiteMigration, StateCopyError, TableCopied, TargetHoldsState, copy_state
from gateway.workorders import WorkOrderConfig, WorkOrders
from warden.config import load_config


def run_copy(config_file: Path | None, source: Path | None, target: str | None, site: str | None, replace: bool,
             say: Callable[[str], None]) -> list[TableCopied]:
    """Copy, taking from `config_file` (a gateway config) what the options leave out: the
    source (its state_db file) or the target (its state_db URL), the sites an old file's
    migration needs, and the partition's lease. StateCopyError names the option at fault."""
    config = load_config(config_file, GatewayConfig) if config_file is not None else None
    configured = config.state_db if config is not None else None
    source = source or (configured if isinstance(configured, Path) else None)
    target = target or (configured if isinstance(configured, str) else None)
    if source is None:
        raise StateCopyError("--from: required (the SQLite state file), or a --config whose state_db is one")
    if target is None or not is_postgres_url(target):
        raise StateCopyError(f"--to: expected a postgresql:// URL, got {target!r}" if target else
                             "--to: required (the PostgreSQL database), or a --config whose state_db is one")
    sites, lease = SiteMigration(site), None
    if config is not None and config_file is not None:
        served = [s.id for s, _ in load_sites(config, config_file)]
        sites = SiteMigration(site or served[0], scoped=len(served) > 1)
        lease = LeaseTarget(config.lease.dsn, lease_name(config)) if config.lease else LeaseTarget(target, config.id)
    try:
        copied = copy_state(source, target, sites=sites, lease=lease, replace=replace,
                            progress=lambda t: say(f"{t.table}: {t.rows} rows" + (f", next id {t.next_id}" if t.next_id else "")))
    except TargetHoldsState as exc:
        raise StateCopyError(f"{exc}; --replace overwrites it") from exc
    except NeedsSite as exc:
        raise StateCopyError(f"{exc} (--site names it, or --config)") from exc
    say(f"copied {sum(t.rows for t in copied)} rows in {len(copied)} tables; every count checked in PostgreSQL")
    photos = next(t.rows for t in copied if t.table == "work_order_photos")
    if photos:
        orders = WorkOrders(source, config.work_orders if config is not None else WorkOrderConfig(), sites.site or "")
        folder = orders.photo_dir  # the work orders' own answer: as configured, else beside the file
        orders.close()
        say(f"{photos} work-order photos stay files in {folder}: set work_orders.photo_dir to that folder")
    say("next: set state_db to the PostgreSQL URL in the gateway's config and start the gateway")
    return copied
