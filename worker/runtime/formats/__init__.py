"""Built-in parsers: one fragment's byte stream -> Arrow record batches.

Runs inside the sandbox. One module per format (xsv, json, avro, parquet, custom);
`registry` maps `parser.format` to its parser. Every parser streams: a fragment is
never held in memory whole (Parquet, which needs seeks, is spooled to a temporary
file instead). Formats pyarrow can parse (CSV, JSON Lines, Parquet) never loop per
row in Python.
"""

from worker.runtime.formats.errors import ParseError
from worker.runtime.formats.registry import parse, parse_into
from worker.runtime.formats.rows import RowColumns, columns_to_batch, rows_to_batch

__all__ = ["ParseError", "RowColumns", "columns_to_batch", "parse", "parse_into",
           "rows_to_batch"]
