"""The `connector` command line."""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from worker import ceilings, naming
from worker.console import (
    EXIT_BAD,
    EXIT_FAILED,
    EXIT_OK,
    err,
    literal,
    out,
    print_failure,
    print_failures,
    print_summary,
    safe,
    tables,
    text,
)
from worker.errors import ConfigError
from worker.models import Fragment, FragmentFailure, RefreshRecord
from worker.models import Progress as RefreshProgress
from worker.sandbox.base import Sandbox, Session
from worker.sandbox.choose import PROCESS_WARNING, get_sandbox
from worker.sandbox.mounts import Mount
from worker.sandbox.process import unenforced_network
from worker.settings import settings
from worker.spec import Connector, SpecError, load_connector

if TYPE_CHECKING:
    from worker.sink import Output
    from worker.state.base import StateStore
    from worker.state.sqlite import SqliteState
    from worker.table.delta import DeltaDataset

# Start-up is part of every `connector test`: what only `refresh`, `show`, `history` and
# `vacuum` use (Progress, the Parquet sink, SQLite state, the Delta table) is imported
# where they use it.

def _default_output() -> str:
    return settings().output


def _load(path: str) -> Connector:
    """The folder, validated, with its limits within the operator's global ceilings."""
    try:
        c = load_connector(path)
        ceilings.enforce(c, ceilings.global_ceilings())
        return c
    except (SpecError, ceilings.CeilingError) as e:
        # one line per mistake found (the message's own newlines kept)
        err.print(f"[red]error:[/red] {escape(literal(e, lines=True))}", highlight=False)
        sys.exit(EXIT_BAD)


def _sandbox(name: str | None, connector: Connector, mounts: tuple[str, ...] = ()) -> Sandbox:
    try:
        sandbox = get_sandbox(name, [Mount.parse(m) for m in mounts])
    except ConfigError as e:
        err.print(f"[red]error:[/red] {safe(e)}", highlight=False)
        sys.exit(EXIT_BAD)
    if name is None and sandbox.name == "process":
        err.print(f"[yellow]warning:[/yellow] {PROCESS_WARNING}")
    if sandbox.name == "process" and (note := unenforced_network(connector)):
        err.print(f"[yellow]warning:[/yellow] {safe(note)}", highlight=False)
    return sandbox


def _credentials(connector: Connector, file: str | None) -> str | None:
    if file is not None:
        return Path(file).read_text()
    try:
        return connector.read_credentials()
    except SpecError as e:
        err.print(f"[red]error:[/red] {safe(e)}", highlight=False)
        sys.exit(EXIT_BAD)


def local_state_file(output: Output, connector: Connector) -> Path:
    # Inside the dataset folder, so a copied or moved folder brings its own state and a
    # copy's refresh never touches the original.
    from worker.table.owner import LOCAL_STATE_FILE

    spec = connector.spec
    if output.is_local:
        return Path(output.dataset_dir(spec.tenant, spec.name)) / LOCAL_STATE_FILE
    tenant, name = naming.path_parts(spec.tenant, spec.name)
    return settings().state_dir / tenant / f"{name}.sqlite"


def local_state(output: Output, connector: Connector) -> SqliteState:
    from worker.state.sqlite import SqliteState

    return SqliteState(local_state_file(output, connector))


def local_refreshes(path: str, output: str | None,
                    limit: int) -> tuple[str, list[RefreshRecord]]:
    """(heading, records) of a connector folder's local refreshes into `output`, newest
    first. Reading opens no state that does not exist (worker.table.owner)."""
    from worker.sink import Output

    c = _load(path)
    sink = Output(output or _default_output())
    name = escape(f"{c.spec.tenant}/{c.spec.name}")
    where = escape(sink.dataset_uri(c.spec.tenant, c.spec.name))
    if not local_state_file(sink, c).exists():
        return f"[bold]{name}[/bold]: no local refresh into {where} yet", []
    state = local_state(sink, c)
    committed = state.committed()
    return (f"[bold]{name}[/bold] local refreshes into {where}; {len(committed)} "
            f"fragment(s), {sum(f.rows for f in committed.values())} row(s) committed",
            state.refreshes(limit))


def cut_note(shown: int, total: int, more: str = "--limit N for more") -> str | None:
    """Said whenever rows were left out, so a short print never passes for the data."""
    return f"first {shown} of {total} rows ({more})" if total > shown else None


def rows_table(table, title: str, limit: int,  # noqa: ANN001 - pyarrow Table
               more: str = "--limit N for more") -> Table:
    t = Table(title=text(title), show_lines=False,
              caption=cut_note(max(limit, 0), table.num_rows, more))
    for field in table.schema:
        t.add_column(Text.assemble(text(field.name), "\n", text(field.type, "dim")))
    from worker.table import render

    for row in render.rows(table, limit):
        t.add_row(*(text("∅" if v is None else v) for v in row.values()))
    return t


def _terminate(signum: int, _frame: object) -> None:
    # SIGTERM unwinds like Ctrl-C: `finally` blocks close sandbox sessions, so a
    # stopped CLI or worker leaves no containers behind.
    sys.exit(128 + signum)


class _Commands(click.Group):
    """Queue-mode commands are imported when named: their client libraries (Redis, RQ)
    cost more start-up than the rest of the CLI together, and local commands
    (`test`, `refresh PATH`) never use them."""

    lazy = {"deploy": "worker.queue.cli", "status": "worker.queue.cli",
            "ceilings": "worker.queue.cli", "worker": "worker.queue.cli"}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy and name not in self.commands:
            self.add_command(getattr(importlib.import_module(self.lazy[name]), name), name)
        return super().get_command(ctx, name)


@click.group(cls=_Commands)
def main() -> None:
    """Host custom Python read connectors: test, refresh and show their data."""
    signal.signal(signal.SIGTERM, _terminate)
    from worker.arrays import skip_pandas_probe

    skip_pandas_probe()  # no command hands data to pandas: 0.1-0.5 s of start-up saved


@main.command()
@click.argument("path")
def validate(path: str) -> None:
    """Check a connector folder without running it."""
    from worker.userenv.lock import locked_requirements

    c = _load(path)
    try:
        locked_requirements(c)  # a broken or stale connector.lock refuses builds too
    except ConfigError as e:
        err.print(f"[red]error:[/red] {safe(e)}", highlight=False)
        sys.exit(EXIT_BAD)
    out.print(f"[green]ok[/green] {c.spec.tenant}/{c.spec.name}: parser {c.spec.parser.format}, "
              f"{len(c.spec.schema_.columns)} column(s), {len(c.spec.packages)} package(s)")


sandbox_option = click.option("--sandbox", type=click.Choice(["docker", "process"]),
                              default=None, help="Where user code runs (default: docker "
                              "when an engine answers, else process).")


mount_option = click.option(
    "--mount", "mounts", multiple=True, metavar="HOST:CONTAINER",
    help="Local development: a host folder the connector reads at CONTAINER (read-only).")


@main.command()
@click.argument("path")
@click.option("--credentials-file", type=click.Path(exists=True, dir_okay=False))
@click.option("--limit", default=3, show_default=True, help="Fragments to read.")
@sandbox_option
@mount_option
def test(path: str, credentials_file: str | None, limit: int, sandbox: str | None,
         mounts: tuple[str, ...]) -> None:
    """Run the connector once with no state: listing, schema and rows of a few fragments."""
    c = _load(path)
    creds = _credentials(c, credentials_file)
    box = _sandbox(sandbox, c, mounts)
    failed = False
    session, listed = _open_and_list(box, c, creds)
    try:
        tree = Tree(f"[bold]{c.spec.name}[/bold] ({len(listed)} fragment(s))")
        nodes: dict[str, Tree] = {}
        for f in listed:
            parent, parts = tree, f.name.split("/")
            for i, part in enumerate(parts[:-1]):
                key = "/".join(parts[: i + 1])
                if key not in nodes:  # each folder once, however many files it holds
                    nodes[key] = parent.add(text(part + "/"))
                parent = nodes[key]
            parent.add(Text.assemble(text(parts[-1]), "  ", text(f.fingerprint, "dim")))
        tables.print(tree)
        if not listed:
            err.print("[yellow]note:[/yellow] list_objects yielded no fragments", end="")
            if box.name == "docker":
                # A glob of a host folder lists nothing in a container instead of failing.
                err.print(". In the docker sandbox the connector sees its own folder "
                          "only: a host folder it lists needs --mount HOST:CONTAINER "
                          "(local runs), or --sandbox process", highlight=False, end="")
            err.print()
        for f in listed[:limit]:
            if not session.usable:
                session.close()
                session = box.open(c, creds)
            try:
                stream = session.read(f)
                import pyarrow as pa

                batches = list(stream)
                report = stream.report
            except FragmentFailure as e:
                _print_failure(f.name, e)
                failed = True
                continue
            if batches:
                table = pa.Table.from_batches(batches)
                tables.print(rows_table(table, f"{f.name}: {table.num_rows} row(s)", 20,
                                     "refresh, then connector show --limit N"))
            else:
                out.print(f"{safe(f.name)}: 0 rows", highlight=False)
            if report and (report.rejected or report.defaulted):
                err.print(f"[yellow]{report.rejected} row(s) rejected, {report.defaulted} "
                          "value(s) defaulted[/yellow]")
                for rej in report.rejects[:10]:
                    where = f"line {rej.line}" if rej.line is not None else f"row {rej.row}"
                    col = f" {rej.column}" if rej.column else ""
                    err.print(literal(f"  {where}{col} {rej.value!r}: {rej.reason}"
                                      f"{': ' + rej.detail if rej.detail else ''} ({rej.action})"),
                              markup=False, highlight=False)
            if report and report.log:
                out.print(f"[dim]log of {safe(f.name)}:[/dim]", highlight=False)
                out.print(literal(report.log.rstrip(), lines=True), markup=False,
                          highlight=False)
    finally:
        session.close()
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


@main.command()
@click.argument("path")
@click.option("--credentials-file", type=click.Path(exists=True, dir_okay=False))
@click.option("--fragments", default=3, show_default=True, help="Fragments to sample.")
@sandbox_option
@mount_option
def infer(path: str, credentials_file: str | None, fragments: int, sandbox: str | None,
          mounts: tuple[str, ...]) -> None:
    """Read the first fragments and print a `schema:` block for connector.yaml."""
    import pyarrow as pa

    from worker.infer import infer_columns, schema_yaml
    from worker.spec import Schema

    c = _load(path)
    # Read as the data is: no declared columns, so nothing is cast or rejected.
    raw = c.model_copy(update={"spec": c.spec.model_copy(update={"schema_": Schema()})})
    creds = _credentials(c, credentials_file)
    box = _sandbox(sandbox, c, mounts)
    session, listed = _open_and_list(box, raw, creds)
    samples: list[pa.Table] = []
    try:
        for f in listed[:fragments]:
            try:
                batches = list(session.read(f))
            except FragmentFailure as e:
                _print_failure(f.name, e)
                sys.exit(EXIT_FAILED)
            if batches:
                samples.append(pa.Table.from_batches(batches))
    finally:
        session.close()
    if not samples:
        err.print(f"[yellow]no rows in the first {fragments} fragment(s): nothing to "
                  "infer[/yellow]")
        sys.exit(EXIT_FAILED)
    err.print(f"[dim]inferred from {sum(t.num_rows for t in samples)} row(s) of "
              f"{len(samples)} fragment(s)[/dim]")
    sys.stdout.write(schema_yaml(infer_columns(samples)))


def _open_and_list(box: Sandbox, c: Connector,
                   creds: str | None) -> tuple[Session, list[Fragment]]:
    """A session and the full listing; a failure of either is printed and exits 1."""
    try:
        session = box.open(c, creds)
    except FragmentFailure as e:
        # Opening builds the connector's environment and starts the sandbox before
        # context() runs; the message says which step failed.
        _print_failure("starting the connector", e)
        sys.exit(EXIT_FAILED)
    try:
        return session, list(session.list())
    except FragmentFailure as e:
        session.close()
        _print_failure("list_objects", e)
        sys.exit(EXIT_FAILED)


def _print_failure(what: str, e: FragmentFailure) -> None:
    print_failure(what, e.kind, e.message, e.traceback, e.log)


@main.command()
@click.argument("path")
@click.option("--output", default=None, help="Output directory or pyarrow filesystem URI.")
@click.option("--concurrency", default=os.cpu_count() or 1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary object.")
@sandbox_option
@click.option("--queue", "queued", is_flag=True,
              help="Queue mode: PATH is a deployed connector's NAME; workers refresh it.")
@click.option("--tenant", default=None, help="Queue mode: the connector's tenant.")
@click.option("--wait", is_flag=True, help="Queue mode: follow the refresh to its end.")
@click.option("--full", is_flag=True, help="Read every listed fragment again.")
@mount_option
def refresh(path: str, output: str | None, concurrency: int, as_json: bool,
            sandbox: str | None, queued: bool, tenant: str | None, wait: bool,
            full: bool, mounts: tuple[str, ...]) -> None:
    """Read new and changed fragments, drop those no longer listed: one table version."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from worker.refresh import refresh as run_refresh
    from worker.sink import Output
    from worker.table.owner import SharedDataset, check_local

    if (queued or tenant is not None) and mounts:
        err.print("[red]error:[/red] --mount is for local runs only: in queue mode workers "
                  "never mount host folders (reach data over the network: limits.network)")
        sys.exit(EXIT_BAD)
    if queued or tenant is not None:
        from worker.queue.cli import queued_refresh

        queued_refresh(path, tenant, wait, as_json)
        return
    c = _load(path)
    creds = _credentials(c, None)
    box = _sandbox(sandbox, c, mounts)
    sink = Output(output or _default_output())
    try:
        check_local(sink, c.spec.tenant, c.spec.name, local_state_file(sink, c))
    except SharedDataset as e:
        err.print(f"[red]error:[/red] {safe(e)}", highlight=False)
        sys.exit(EXIT_BAD)
    state = local_state(sink, c)
    # On a terminal only: piped output and --json stay free of control codes.
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("fragments, {task.fields[rows]:,} rows ({task.fields[rate]})"),
                  TimeElapsedColumn(), console=err, transient=True,
                  disable=as_json or not err.is_terminal) as progress:
        task = progress.add_task(f"refreshing {c.spec.name}", total=None, rows=0,
                                 rate="-")
        started = time.monotonic()

        def on_progress(p: RefreshProgress) -> None:
            secs = max(time.monotonic() - started, 1e-3)
            rate = f"{p.rows / secs:,.0f} rows/s" + (f", {p.rejected} rejected"
                                                     if p.rejected else "")
            progress.update(task, completed=p.done, total=p.total, rows=p.rows, rate=rate)

        try:
            summary = run_refresh(c, box, state, sink, concurrency, on_progress, creds, full)
        except KeyboardInterrupt:
            progress.stop()
            _interrupted(state)
    if as_json:
        print(json.dumps(summary.counts()))
    else:
        print_summary(c.spec.name, summary)
    print_failures(summary.failures)
    sys.exit(EXIT_FAILED if summary.failed else EXIT_OK)


def _interrupted(state: StateStore) -> NoReturn:
    """Ctrl-C in a local refresh: what it leaves is staged, and the next refresh's
    recovery commits it (worker.table.ledger), so say so and exit as shells expect."""
    kept = sum(len(state.staged(r)) for r in state.staged_refreshes())
    err.print(f"[yellow]interrupted:[/yellow] {kept} fragment(s) read so far are kept; the "
              "next refresh commits them and reads the rest", highlight=False)
    sys.exit(128 + signal.SIGINT)


def _show_rejects(path: str, output: str | None, jsonl: bool, limit: int,
                  tenant: str | None) -> None:
    from worker.rejects import ParquetRejects
    from worker.sink import Output
    from worker.table import render

    sink = Output(output or _default_output())
    if tenant is None and Path(path).is_dir():
        spec = _load(path).spec
        tenant, path = spec.tenant, spec.name
    store = ParquetRejects(sink)
    table = store.read(tenant or "default", path)
    name = f"{path} rejects"
    if jsonl:
        for row in render.rows(table, limit) if table is not None else ():
            sys.stdout.write(json.dumps(row, default=str) + "\n")
        if table is not None and (note := cut_note(max(limit, 0), table.num_rows)):
            err.print(note, highlight=False)
        return
    if table is None:
        out.print(f"{name}: none in {store.directory(tenant or 'default', path)}")
        return
    fragments = len(set(table.column("fragment").to_pylist()))
    tables.print(rows_table(table, f"{name}: {table.num_rows} row(s) in {fragments} "
                                "fragment(s)", limit))


def _dataset(path: str, output: str | None, tenant: str | None) -> tuple[str, DeltaDataset]:
    """(name, table) of a connector folder, or of a deployed NAME in queue mode. Reading
    opens no state: a local state file in the folder would mark the dataset as a local
    refresh's (worker.table.owner)."""
    from worker.sink import Output
    from worker.table.delta import DeltaDataset

    sink = Output(output or _default_output())
    if tenant is not None or not Path(path).is_dir():
        from worker.queue.cli import queued_dataset
        from worker.table.owner import SharedDataset, check_queue_read

        name, dataset, _ = queued_dataset(path, tenant, sink)
        try:
            check_queue_read(sink, tenant or "default", name)
        except SharedDataset as e:
            err.print(f"[red]error:[/red] {safe(e)}", highlight=False)
            sys.exit(EXIT_BAD)
        return name, dataset
    spec = _load(path).spec
    return spec.name, DeltaDataset.of(sink, spec.tenant, spec.name)


def _dataset_and_state(path: str, output: str | None,
                       tenant: str | None) -> tuple[str, DeltaDataset, StateStore | None]:
    """As `_dataset`, with the state (None: a folder's dataset no local state exists for,
    such as the workers'; it is not created here)."""
    from worker.sink import Output
    from worker.table.delta import DeltaDataset

    sink = Output(output or _default_output())
    if tenant is not None or not Path(path).is_dir():
        from worker.queue.cli import queued_dataset

        return queued_dataset(path, tenant, sink)
    c = _load(path)
    spec = c.spec
    state = local_state(sink, c) if local_state_file(sink, c).exists() else None
    return spec.name, DeltaDataset.of(sink, spec.tenant, spec.name), state


output_option = click.option("--output", default=None,
                             help="Output directory or pyarrow filesystem URI.")
tenant_option = click.option("--tenant", default=None,
                             help="Queue mode: the deployed connector NAME of this tenant.")


@main.command()
@click.argument("path")
@output_option
@click.option("--jsonl", is_flag=True, help="One JSON object per row.")
@click.option("--limit", default=20, show_default=True, help="Rows to print.")
@click.option("--version", "version", type=int, default=None,
              help="An older table version (see `connector history`).")
@tenant_option
@click.option("--rejects", "show_rejects", is_flag=True,
              help="The rejects dataset instead: rows the reads dropped or defaulted.")
def show(path: str, output: str | None, jsonl: bool, limit: int, version: int | None,
         tenant: str | None, show_rejects: bool) -> None:
    """The dataset's rows (the current version unless --version)."""
    from worker.table import render
    from worker.table.schema import FRAGMENT_COLUMN

    if show_rejects:
        _show_rejects(path, output, jsonl, limit, tenant)
        return
    name, dataset = _dataset(path, output, tenant)
    try:
        table = dataset.read(version)
    except Exception as e:  # noqa: BLE001 - delta-rs raises several kinds for a bad version
        err.print(f"[red]error:[/red] {name}: cannot read version {version} of "
                  f"{escape(dataset.uri)}: {escape(str(e))}", highlight=False)
        sys.exit(EXIT_BAD)
    if table is None:
        err.print(f"{name}: no table at {escape(dataset.uri)} yet (nothing committed; "
                  "run `connector refresh`, or pass --output where it was written)",
                  highlight=False)
        return
    if jsonl:
        for row in render.rows(table, limit):
            sys.stdout.write(json.dumps(row, default=str) + "\n")
        if note := cut_note(max(limit, 0), table.num_rows):
            err.print(note, highlight=False)
        return
    fragments = (table.column(FRAGMENT_COLUMN).unique().__len__()
                 if FRAGMENT_COLUMN in table.schema.names else None)
    where = f" in {fragments} fragment(s)" if fragments is not None else ""
    at = "" if version is None else f" (version {version})"
    tables.print(rows_table(table, f"{name}{at}: {table.num_rows} row(s){where}", limit))


@main.command()
@click.argument("path")
@output_option
@click.option("--limit", default=20, show_default=True, help="Versions to list.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per version.")
@tenant_option
def history(path: str, output: str | None, limit: int, as_json: bool,
            tenant: str | None) -> None:
    """The table's versions, newest first: refresh id, time and counts."""
    name, dataset = _dataset(path, output, tenant)
    versions = dataset.history(limit)
    if as_json:
        for v in versions:
            print(v.model_dump_json())
        return
    if not versions:
        err.print(f"{name}: no table at {escape(dataset.uri)} yet", highlight=False)
        return
    t = Table(title=f"{name}: {len(versions)} version(s)")
    for col in ("version", "time (UTC)", "refresh", "read", "deleted", "failed", "rows",
                "files +/-"):
        t.add_column(col)
    for v in versions:
        c = v.counts
        when = datetime.fromtimestamp(v.timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")
        t.add_row(str(v.version), when, v.refresh_id or v.operation, str(c.get("read", "")),
                  str(c.get("deleted", "")), str(c.get("failed", "")), str(c.get("rows", "")),
                  f"+{c.get('files_added', 0)}/-{c.get('files_removed', 0)}")
    tables.print(t)


@main.command()
@click.argument("path")
@output_option
@click.option("--retention", default=None,
              help="Keep files any version younger than this needs (e.g. 7d, 12h, 0s); "
                   "default CONNECTOR_RETENTION, else 7d.")
@click.option("--dry-run", is_flag=True, help="List what would be deleted.")
@tenant_option
def vacuum(path: str, output: str | None, retention: str | None, dry_run: bool,
           tenant: str | None) -> None:
    """Delete files that no table version within the retention period needs."""
    from worker.spec import parse_interval

    text = retention or settings().retention
    try:
        keep = timedelta(seconds=parse_interval(text))
    except ValueError as e:
        err.print(f"[red]error:[/red] retention: {escape(str(e))}", highlight=False)
        sys.exit(EXIT_BAD)
    name, dataset, state = _dataset_and_state(path, output, tenant)
    # Files no version names are a crashed refresh's, or a running one's not committed
    # yet: while any refresh has staged files, those are left for a later vacuum.
    # Without a state to ask (the workers' dataset, named by its folder) none are.
    orphans = state is not None and not state.staged_refreshes()
    files = dataset.vacuum(keep, dry_run=dry_run, orphans=orphans)
    verb = "would delete" if dry_run else "deleted"
    out.print(f"{name}: {verb} {len(files)} file(s) no version within {text} needs")
    for f in files:
        out.print(f"  {f}", highlight=False)


@main.command()
@click.argument("path", required=False)
@click.option("--base", "base", is_flag=True,
              help="Build (or find) the base image every connector image starts from.")
@click.option("--registry", is_flag=True,
              help="With --base: start FROM python:3.11-slim instead of a debootstrap rootfs.")
def build(path: str | None, base: bool, registry: bool) -> None:
    """Build (or find) the connector's Docker image: base, pinned packages, code.

    Prints the image's tag. `connector build --base` builds only the base image.
    """
    import docker

    from worker.images import ImageBuildError, base_image, build_connector_image

    if base == (path is not None):
        err.print("[red]error:[/red] give either a connector folder or --base")
        sys.exit(EXIT_BAD)
    if registry and not base:
        err.print("[red]error:[/red] --registry only applies to --base")
        sys.exit(EXIT_BAD)
    c = _load(path) if path is not None else None
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except docker.errors.DockerException as e:
        err.print(f"[red]error:[/red] no Docker engine answers: {safe(e)}")
        sys.exit(EXIT_BAD)
    try:
        tag = (build_connector_image(client, c) if c is not None
               else base_image(client, registry=registry or None))
    except ImageBuildError as e:
        err.print(f"[red]error:[/red] {safe(e)}", highlight=False)
        sys.exit(EXIT_FAILED)
    out.print(tag)


@main.command()
@click.argument("path")
def lock(path: str) -> None:
    """Resolve the connector's packages and write connector.lock beside its code.

    Later builds and deploys install exactly the versions written there (in Docker and
    in the process sandbox) until the packages change; then run it again.
    """
    from worker.errors import ConnectorError
    from worker.images.cache import wheel_cache_dir
    from worker.images.pip import PipFailure
    from worker.userenv.lock import lock_path, write_lock

    c = _load(path)
    try:
        resolved = write_lock(c, wheel_cache_dir())
    except PipFailure as e:
        err.print(f"[red]error:[/red] connector {c.spec.name!r}: packages could not be "
                  f"resolved: {safe(e.reason)}", highlight=False)
        sys.exit(EXIT_FAILED)
    except ConnectorError as e:
        err.print(f"[red]error:[/red] {safe(e)}", highlight=False)
        sys.exit(EXIT_FAILED)
    for pin in resolved:
        out.print(pin, highlight=False)
    n = len(resolved)
    err.print(f"wrote {lock_path(c)} ({n} distribution{'' if n == 1 else 's'})",
              highlight=False)


if __name__ == "__main__":
    main()
