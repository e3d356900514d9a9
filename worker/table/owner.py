"""Which state store indexes a dataset: a local refresh's SQLite file or queue mode's Redis.

A dataset's state knows which fragment versions its table holds; it is the only thing a
refresh diffs against. A local `connector refresh` keeps it in SQLite (beside the table,
`_connector/state.sqlite`, for a local output; under `CONNECTOR_STATE_DIR` otherwise),
queue-mode workers keep it in Redis. The two never see each other's commits, so a
refresh through the other one would read every fragment again and commit its rows
beside those already there. Both sides check before reading anything:

- workers refuse a dataset folder holding a local refresh's state file;
- a local refresh refuses a table its state does not exist for (written by workers, or
  its state file was removed by hand);
- each refuses a table whose latest version the other's store committed: every version
  records its store's kind in the Delta commit info (`connector.owner`: local or queue).
  This is what catches a local refresh's table on S3, whose state is not in the folder.

These checks run when a refresh starts; the other side may commit while its reads run.
So every commit looks again (`check_commit`), at the table version it commits on: the
latest version must not be the other store's. delta-rs refuses a commit on a version
another commit has followed (both sides' commits carry the project's transaction id),
so no commit can slip in between that look and the commit.

Each refusal names the folder, who wrote it and what to do instead. Reading a deployed
connector's rows (`show NAME --tenant T`) refuses a local refresh's folder the same way:
those rows are not the workers'.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs
from deltalake import DeltaTable

from worker.errors import ConfigError
from worker.models import FragmentFailure
from worker.sink import Output
from worker.table.delta import DeltaDataset

# Relative to the dataset folder; a name Delta's vacuum leaves alone.
LOCAL_STATE_FILE = "_connector/state.sqlite"


class SharedDataset(ConfigError):
    """The dataset belongs to the other mode's state store."""


def _exists(output: Output, path: str) -> bool:
    return output.fs.get_file_info(path).type != pafs.FileType.NotFound


def _local_refresh_wrote(output: Output, tenant: str, name: str) -> bool:
    return _exists(output, f"{output.dataset_dir(tenant, name)}/{LOCAL_STATE_FILE}")


def _owner(output: Output, tenant: str, name: str) -> str | None:
    # the last few versions: ours are every version but vacuum's
    return DeltaDataset.of(output, tenant, name).owner(versions=10)


def check_local(output: Output, tenant: str, name: str, state_file: Path) -> None:
    """Before a local refresh opens (and so creates) `state_file`: a table without it was
    not committed through it, nor one the workers committed last."""
    root = output.dataset_dir(tenant, name)
    if not _exists(output, f"{root}/_delta_log"):
        return
    if state_file.exists():
        if _owner(output, tenant, name) != "queue":
            return
        raise SharedDataset(
            f"{output.dataset_uri(tenant, name)} holds {tenant}/{name}'s table as "
            "queue-mode workers committed it (its owner: their state in Redis), not the "
            f"local state {state_file}: a local refresh would diff against state that "
            "does not describe this table and add rows a second time. Refresh it with "
            f"`connector refresh {name} --tenant {tenant} --queue`, or give this refresh "
            "another --output.")
    raise SharedDataset(
        f"{output.dataset_uri(tenant, name)} already holds {tenant}/{name}'s table, but "
        f"not the local state that wrote it ({state_file} is missing): queue-mode "
        "workers wrote it, or the state file was removed. A local refresh would read "
        "every fragment again and add its rows a second time. Refresh it with "
        f"`connector refresh {name} --tenant {tenant} --queue`, or give this refresh "
        "another --output (or delete the folder to start over).")


def check_queue(output: Output, tenant: str, name: str) -> None:
    """Before workers refresh: a dataset folder with a local refresh's state is that
    refresh's (the refresh fails as the user's, like its listing would), and so is a
    table (on S3, say) whose latest version a local refresh committed."""
    if not _local_refresh_wrote(output, tenant, name):
        if _owner(output, tenant, name) != "local":
            return
        raise FragmentFailure(
            f"{output.dataset_uri(tenant, name)} holds {tenant}/{name}'s table as a local "
            "`connector refresh` committed it (its owner: that refresh's state, under "
            "CONNECTOR_STATE_DIR where it ran); queue-mode workers keep their own state "
            "in Redis and would read every fragment again and add its rows a second "
            "time. Give the workers another CONNECTOR_OUTPUT (or delete the table to "
            "start over).")
    raise FragmentFailure(
        f"{output.dataset_uri(tenant, name)} holds a local `connector refresh`'s dataset "
        f"of {tenant}/{name} (its state: {LOCAL_STATE_FILE}); queue-mode workers keep "
        "their own state in Redis and would read every fragment again and add its rows "
        "a second time. Give the workers another CONNECTOR_OUTPUT (or delete the folder "
        "to start over).")


def check_queue_read(output: Output, tenant: str, name: str) -> None:
    """Before showing a deployed connector's rows from `output`."""
    if _local_refresh_wrote(output, tenant, name):
        state = f"its state: {LOCAL_STATE_FILE}"
    elif _owner(output, tenant, name) == "local":
        state = "its table's owner: a local refresh's state"
    else:
        return
    raise SharedDataset(
        f"{output.dataset_uri(tenant, name)} holds a local `connector refresh`'s dataset "
        f"({state}), not the workers' rows of {tenant}/{name}: set "
        "CONNECTOR_OUTPUT (or --output) to where the workers write.")


def check_commit(table: DeltaDataset, current: DeltaTable, owner: str) -> None:
    """Before committing on `current` for the state store `owner`: its latest version
    must not be the other store's (one committed after this refresh's start check)."""
    other = table.owner(current, versions=10)
    if other is None or other == owner:
        return
    if owner == "queue":
        raise FragmentFailure(
            f"{table.uri}: a local `connector refresh` committed a version of this table "
            "while this queue-mode refresh ran (its owner is now that refresh's state); "
            "the workers keep their own state in Redis, and committing would add rows a "
            "second time, so nothing was committed. Give the workers another "
            "CONNECTOR_OUTPUT (or delete the table to start over).")
    raise FragmentFailure(
        f"{table.uri}: queue-mode workers committed a version of this table while this "
        "local refresh ran (its owner is now their state in Redis); committing would add "
        "rows a second time, so nothing was committed. Refresh it with `connector "
        "refresh NAME --tenant TENANT --queue`, or give this refresh another --output.")
