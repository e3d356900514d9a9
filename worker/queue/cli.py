"""Queue-mode commands: deploy, refresh --queue, show --tenant, status, ceilings, worker.

Registered on the `connector` group by worker/cli.py. Exit codes as in local mode:
0 ok, 1 the refresh failed, 2 bad connector, usage, unknown connector or no Redis.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import NoReturn

import click
import redis.exceptions
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from worker import ceilings as ceilings_
from worker import naming
from worker.console import (
    EXIT_BAD,
    EXIT_FAILED,
    EXIT_OK,
    err,
    literal,
    out,
    print_failures,
    print_summary,
    tables,
)
from worker.errors import ConnectorError
from worker.models import RefreshRecord
from worker.queue.client import TenantClient
from worker.queue.conn import connect, redis_url
from worker.sink import Output
from worker.spec import SpecError, load_connector
from worker.state.redis import RedisState
from worker.table.delta import DeltaDataset


def _fail(message: str) -> NoReturn:
    # a message of several lines (a spec with several mistakes) keeps them
    err.print(f"[red]error:[/red] {escape(literal(message, lines=True))}", highlight=False)
    sys.exit(EXIT_BAD)


def _named(kind: str, value: str) -> str:
    """A tenant or connector name from the command line, or a usage error."""
    try:
        return naming.check_name(kind, value)
    except naming.InvalidName as e:
        _fail(str(e))


def _client(tenant: str) -> TenantClient:
    _named("tenant", tenant)
    r = connect()
    try:
        r.ping()
    except redis.exceptions.ConnectionError as e:
        _fail(f"cannot reach Redis at {redis_url()}: {e}")
    return TenantClient(r, tenant)


def _target(path: str, tenant: str | None) -> tuple[str, str]:
    """(tenant, name): NAME with --tenant, or a connector folder's own spec."""
    if tenant is None and Path(path).is_dir():
        try:
            spec = load_connector(path).spec
        except SpecError as e:
            _fail(str(e))
        return spec.tenant, spec.name
    return _named("tenant", tenant or "default"), _named("connector", path)


@click.command()
@click.argument("path")
@click.option("--credentials-ref", is_flag=True,
              help="Store only the credentials' file reference, read on the workers from "
                   "CONNECTOR_CREDENTIALS_DIR/<tenant>/<name>/.")
def deploy(path: str, credentials_ref: bool) -> None:
    """Store a connector version for its tenant (spec + bundle; credentials sealed)."""
    try:
        spec = load_connector(path).spec
        d = _client(spec.tenant).deploy(path, credentials_ref)
    except ConnectorError as e:
        _fail(str(e))
    how = ("none" if d.credentials is None else
           "sealed" if d.credentials.sealed else "reference")
    out.print(f"deployed {d.tenant}/{d.name} version {d.bundle[:12]} (credentials: {how})")


def queued_refresh(name: str, tenant: str | None, wait: bool, as_json: bool) -> NoReturn:
    t, name = _target(name, tenant)
    client = _client(t)
    try:
        handle = client.refresh(name)
    except ConnectorError as e:  # not deployed, or a stored deployment now refused
        _fail(str(e))
    if handle.joined:
        err.print(f"a refresh of {t}/{name} is already running: joining {handle.id}")
    if not wait:
        print(json.dumps(handle.model_dump()) if as_json else handle.id)
        sys.exit(EXIT_OK)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, transient=True,
                  disable=as_json or not err.is_terminal) as progress:
        task = progress.add_task(f"refreshing {t}/{name} ({handle.id})", total=None)
        record = client.wait(name, handle.id,
                             lambda done, total: progress.update(task, completed=done,
                                                                 total=total))
    s = record.summary
    if as_json:
        print(json.dumps(s.counts()))
    else:
        print_summary(name, s)
    print_failures(record.summary.failures)
    sys.exit(EXIT_FAILED if record.status == "failed" else EXIT_OK)


def queued_dataset(name: str, tenant: str | None,
                   output: Output) -> tuple[str, DeltaDataset, RedisState]:
    """A deployed connector's table and state."""
    t, name = _target(name, tenant)
    client = _client(t)
    try:
        return name, client.dataset(name, output), client.state(name)
    except ConnectorError as e:  # not deployed, or a stored deployment now refused
        _fail(str(e))


def _when(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


@click.command()
@click.argument("name")
@click.option("--tenant", default=None, help="The deployed connector's tenant "
              "[default: default].")
@click.option("--limit", default=10, show_default=True, help="Refreshes to show.")
@click.option("--output", default=None,
              help="With a connector folder: where its local refreshes wrote.")
def status(name: str, tenant: str | None, limit: int, output: str | None) -> None:
    """Recent refreshes of a deployed connector, with failures and their logs; given a
    connector folder (PATH), its local refreshes'."""
    if tenant is None and Path(name).is_dir():
        from worker.cli import local_refreshes

        print_refreshes(*local_refreshes(name, output, limit))
        return
    tenant = tenant or "default"
    _named("connector", name)
    client = _client(tenant)
    try:
        d = client.deployment(name)
        records = client.refreshes(name, limit)
        committed = client.committed(name)
    except ConnectorError as e:  # not deployed, or a stored deployment now refused
        _fail(str(e))
    print_refreshes(f"[bold]{tenant}/{name}[/bold] version {d.bundle[:12]} deployed "
                    f"{_when(d.deployed_at)}; {len(committed)} fragment(s), "
                    f"{sum(c.rows for c in committed.values())} row(s) committed"
                    + (f"; every {d.spec.schedule.every}" if d.spec.schedule else ""),
                    records)


def print_refreshes(heading: str, records: list[RefreshRecord]) -> None:
    """`heading` (markup), the refreshes' counts, then each one's failures."""
    out.print(heading)
    t = Table(title="recent refreshes")
    for col in ("id", "status", "started", "seconds", "listed", "read", "skipped",
                "recovered", "deleted", "failed", "rows", "rejected", "defaulted"):
        t.add_column(col)
    for r in records:
        s = r.summary
        secs = f"{r.finished - r.started:.1f}" if r.finished else ""
        colour = {"ok": "green", "failed": "red"}.get(r.status, "yellow")
        t.add_row(r.id, f"[{colour}]{r.shown_status}[/{colour}]", _when(r.started), secs,
                  *(str(v) for v in (s.listed, s.read, s.skipped, s.recovered, s.deleted,
                                     s.failed, s.rows, s.rejected, s.defaulted)))
    tables.print(t)
    for r in records:
        if r.summary.failures:
            err.print(f"[bold]refresh {r.id}[/bold]:")
            print_failures(r.summary.failures, tail=2000)


@click.command()
@click.argument("tenant")
@click.option("--memory", help="Largest limits.memory (e.g. 4g).")
@click.option("--cpus", help="Largest limits.cpus (never above the host's).")
@click.option("--timeout", help="Largest limits.timeout, seconds.")
@click.option("--max-output-bytes", help="Largest limits.max_output_bytes (e.g. 10g).")
@click.option("--pids", help="Largest limits.pids.")
@click.option("--bundle-bytes", help="Bytes of deployed bundles the tenant may store "
              "(e.g. 1g).")
@click.option("--running", help="Most of the tenant's jobs running at once while "
              "another tenant has work pending (finalize jobs excepted).")
@click.option("--connectors", help="Most connectors the tenant may deploy.")
@click.option("--fragments", help="Most fragments the tenant's connectors may keep in "
              "the state, together.")
@click.option("--reset", is_flag=True, help="Drop this tenant's overrides first.")
def ceilings(tenant: str, reset: bool, **values: str | None) -> None:
    """Operator: show or override one tenant's ceilings on connector limits (and on the
    bytes of bundles it may store, the jobs it may run at once, the connectors it may
    deploy and the fragments they may keep)."""
    given = {k: v for k, v in values.items() if v is not None}
    client = _client(tenant)  # checks Redis and the tenant name
    try:
        c = (ceilings_.set_tenant_ceilings(client.redis, tenant, given, reset)
             if given or reset else ceilings_.tenant_ceilings(client.redis, tenant))
    except (ConnectorError, ValueError) as e:  # a bad value, or a bad tenant name
        _fail(str(e))
    t = Table(title=f"ceilings of tenant {tenant}")
    for col in ("limit", "ceiling", "set by"):
        t.add_column(col)
    for field in ceilings_.ENV:
        t.add_row(field, ceilings_.show(field, getattr(c, field)), escape(c.source[field]))
    tables.print(t)


@click.command()
@click.option("--concurrency", default=1, show_default=True, help="Worker processes.")
@click.option("--burst", is_flag=True, help="Quit when no work is left (retries included).")
@click.option("--log-level", default="INFO", show_default=True)
def worker(concurrency: int, burst: bool, log_level: str) -> None:
    """Run queue-mode workers on every tenant's queue (warm sessions, no fork per job)."""
    from pydantic import ValidationError

    from worker.settings import setting_problems, settings

    try:
        settings()
    except ValidationError as e:
        _fail(f"bad setting: {setting_problems(e)}")
    from worker.queue.supervisor import run_many

    try:
        sys.exit(run_many(concurrency, burst, log_level))
    except redis.exceptions.ConnectionError as e:
        _fail(f"cannot reach Redis at {redis_url()}: {e}")
