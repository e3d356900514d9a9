"""A connector's dataset as a Delta Lake table (delta-rs, the `deltalake` package).

delta.py   the table itself: one version per commit, history, reads, vacuum
schema.py  the table's columns: declared schema, `_fragment`, types Delta can store
ledger.py  state and table together: a refresh's version, and recovery after a crash
render.py  committed values as `connector show` prints them
crash.py   a test hook that kills the process at a named step
"""
