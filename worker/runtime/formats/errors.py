"""How a parser reports bytes it cannot read, and whose exception wins.

Malformed bytes raise `ParseError` naming the format and the library's reason. If the
user's `read_bytes` raised (or yielded a non-bytes chunk), `stream.error` is set and
that exception is raised instead: the user's own traceback wins over whatever the
parser made of the truncated stream.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from worker.runtime.rejects import DataError
from worker.runtime.stream import ChunkStream


class ParseError(Exception):
    """The fragment's bytes are not valid for the declared format."""


@contextlib.contextmanager
def translate_errors(stream: ChunkStream, fmt: str) -> Iterator[None]:
    """Translate library errors into ParseError; let the user's own exception win."""
    try:
        yield
    except (ParseError, DataError):  # DataError: too many rows rejected while parsing
        if stream.error is not None:
            raise stream.error from None
        raise
    except Exception as e:
        if stream.error is not None:
            if e is stream.error:
                raise
            raise stream.error from None
        if fmt == "custom":
            raise  # the user's parser_function raised: keep its exception object
        raise ParseError(f"{fmt}: {reason(e)}") from e


def reason(e: BaseException) -> str:
    msg = str(e).strip() or type(e).__name__
    for prefix in ("CSV parse error: ", "JSON parse error: "):
        msg = msg.removeprefix(prefix)
    return msg

