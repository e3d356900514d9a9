"""File-like adapters over a fragment's byte stream, shared by the parsers.

`LineFilter` drops comment lines (and maps line numbers), `Blocks` puts back bytes
already read and hands pyarrow blocks of the size it asks for, `PacedReads` keeps a
reader's background thread a few blocks ahead of its consumer, and `utf8_chunks`
re-encodes any text encoding to UTF-8; each works chunk by chunk, so a fragment is
never held whole.

`LineFilter` is on every CSV fragment's path, so without a comment marker it passes
the bytes through as they come and only keeps its line map: one `count` of newlines per
chunk and one regex search for an empty line (RE2's, on large chunks), and for a chunk
holding a quote one `translate` to its quotes and newlines (about 0.4 ms per MB); the
line-by-line pass runs only on a chunk that has an empty line or a quoted newline.
"""

from __future__ import annotations

import bisect
import codecs
import io
import re
import struct
import sys
import threading
import time
from collections.abc import Iterator

BLOCK_SIZE = 4 << 20  # bytes per CSV/JSON block handed to pyarrow
READ_AHEAD_BLOCKS = 2  # blocks a reader may hold beyond the one being parsed
_EMPTY_LINE = rb"\n\r?\n"  # a line that is "" or "\r", after another line
_EMPTY_LINE_RE = re.compile(_EMPTY_LINE)
# From this size on a chunk is searched by pyarrow's RE2 (several times faster than
# `re` on large inputs; a per-call cost of tens of microseconds on small ones).
_RE2_FROM = 1 << 16


def _has_empty_line(chunk: bytes) -> bool:
    if len(chunk) < _RE2_FROM:
        return _EMPTY_LINE_RE.search(chunk) is not None
    import pyarrow as pa  # the runtime has it loaded; LineFilter's other users need not
    import pyarrow.compute as pc

    offsets = pa.py_buffer(struct.pack("<qq", 0, len(chunk)))
    one = pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(chunk)])
    return bool(pc.match_substring_regex(one, _EMPTY_LINE)[0].as_py())


class LineFilter(io.RawIOBase):
    """Drops lines that start with `comment` (when given), chunk by chunk (bytes level),
    and keeps the map from a CSV reader's record numbers, which count neither empty lines
    nor dropped ones nor the further lines of a record whose quoted field holds a
    newline, back to the file's own line numbers (`physical`).

    With a `quote` byte, newlines inside quotes are told apart by the parity of the quotes
    before them. A chunk without a quote costs nothing more; one with quotes, one
    `translate` and one `replace` (C loops) to learn that no newline in it is quoted; only
    a chunk that has a quoted newline is walked line by line."""

    def __init__(self, raw: io.RawIOBase, comment: bytes | None, quote: bytes | None = None,
                 escape: bytes | None = None) -> None:
        self._raw = raw
        self._comment = comment
        self._carry = b""  # an incomplete last line
        self._out = memoryview(b"")
        self._eof = False
        self._counted = 0  # lines passed on that a reader counts (not empty)
        self._skipped: list[int] = []  # per uncounted line: counted lines before it
        # How the current unfinished line starts: b"" (nothing yet), b"\r", b"q" inside
        # a quoted field (the rest of a record), or b"x" for anything else.
        self._line = b""
        self._quote = quote or None
        self._escape = escape or None
        self._in_quote = False  # the bytes scanned so far end inside a quoted field
        # Newlines inside quotes: how many, in how many records, the first such record's
        # line (the parser allows them or fails on the first, naming its line).
        self.quoted_newlines = 0
        self.quoted_rows = 0
        self.quoted_line: int | None = None
        self._escape_next = False  # the last chunk ended in an escape (that escapes on)
        # What `translate` deletes so only quotes and newlines are left.
        self._not_marks = (bytes(b for b in range(256) if b not in (quote[0], 10))
                           if quote is not None and len(quote) == 1 else b"")

    def readable(self) -> bool:
        return True

    def physical(self, counted: int) -> int:
        """The file's line number of the `counted`-th counted line (1-based)."""
        return counted + bisect.bisect_right(self._skipped, counted - 1)

    def _quotes_odd(self, line: bytes) -> bool:
        q = self._quote
        assert q is not None
        if self._escape is not None:  # an escaped quote (or escape) toggles nothing
            e = self._escape
            line = line.replace(e + e, b"").replace(e + q, b"")
        return bool(line.count(q) & 1)

    def _has_quoted_newline(self, data: bytes) -> bool:
        """Whether `data`, scanned next, holds a newline inside quotes or ends a line that
        started inside one (then only a line-by-line pass counts right); if not, the
        quote state moves to the end of `data` here."""
        q = self._quote
        if q is None:
            return False
        if self._line == b"q":
            return True
        if not self._in_quote and q not in data:
            return False
        if self._escape is not None or not self._not_marks:
            return True
        # Only quotes and newlines: a line's quotes are its length. A newline is quoted
        # when the quotes before it are odd in number, so every line but the last must
        # have an even number of them (the first counting the open quote carried in).
        marks = data.translate(None, self._not_marks)
        carried = 1 if self._in_quote else 0
        first = marks.find(b"\n")
        if first < 0:
            self._in_quote = bool((len(marks) + carried) & 1)
            return False
        if (first + carried) & 1:
            return True
        last = marks.rfind(b"\n")
        line = marks[first + 1:marks.find(b"\n", first + 1) + 1]
        # The lines after the first: the same quotes on every one (a file that quotes
        # the same columns throughout) when copies of the first tile them, else pairs
        # side by side cancel and a quote left over is a line with an odd number.
        if not (len(line) & 1
                and marks.count(line, first + 1, last + 1) * len(line) == last - first) and (
                q in marks[first + 1:last + 1].replace(q + q, b"")):
            return True
        self._in_quote = bool((len(marks) - last - 1) & 1)
        return False

    def _quoted_end(self, start: bytes) -> None:
        """A line that began as `start` ends inside quotes (before `_line_end`)."""
        self.quoted_newlines += 1
        if start != b"q":
            self.quoted_rows += 1
            if self.quoted_line is None:
                self.quoted_line = self._counted + len(self._skipped) + 1

    def _line_end(self, start: bytes, line: bytes) -> None:
        """Counts a finished line that began as `start` (a `_line` state)."""
        if start == b"q" or (start != b"x" and (start + line[:2]) in (b"", b"\r")):
            self._skipped.append(self._counted)  # the reader does not count it
        else:
            self._counted += 1

    def _filter(self, data: bytes) -> bytes:
        c = self._comment
        self._line = b"q" if self._in_quote else b""  # `data` starts at a line's start
        quoted = self._has_quoted_newline(data)
        comments = c is not None and (data.startswith(c) or b"\n" + c in data)
        empties = (data[:1] == b"\n" or data[:2] == b"\r\n" or b"\n\n" in data
                   or b"\n\r\n" in data)
        if not quoted and not comments and not empties:  # the common case: no line pass
            self._counted += data.count(b"\n") + (1 if data[-1:] not in (b"\n", b"") else 0)
            return data
        parts = data.split(b"\n")
        last = len(parts) - 1
        out: list[bytes] = []
        for i, line in enumerate(parts):
            if i == last and not line:
                break
            nl = b"\n" if i < last else b""
            start = b"q" if quoted and self._in_quote else b""
            if start != b"q" and c is not None and line.startswith(c):
                self._skipped.append(self._counted)
                continue
            if quoted and self._quotes_odd(line):
                self._in_quote = not self._in_quote
            if nl and self._in_quote:
                self._quoted_end(start)
            self._line_end(start, line)
            out.append(line + nl)
        return b"".join(out)

    def _scan(self, chunk: bytes) -> None:
        """Updates the line map for `chunk` (no comment marker: nothing is dropped)."""
        if self._has_quoted_newline(chunk):
            self._scan_quoted(chunk)
            return
        head = self._line
        starts_empty = (chunk.startswith(b"\n") if head == b"\r"
                        else head == b"" and (chunk.startswith(b"\n")
                                              or chunk.startswith(b"\r\n")))
        if starts_empty or _has_empty_line(chunk):
            parts = (head + chunk).split(b"\n")
            for line in parts[:-1]:
                if not line or line == b"\r":
                    self._skipped.append(self._counted)  # the reader skips it, uncounted
                else:
                    self._counted += 1
            tail = parts[-1][:2]
        else:
            self._counted += chunk.count(b"\n")
            cut = chunk.rfind(b"\n")
            tail = chunk[cut + 1:cut + 3] if cut >= 0 else head + chunk[:2]
        self._line = tail if tail in (b"", b"\r") else b"x"
        self._escape_next = False

    def _scan_quoted(self, chunk: bytes) -> None:
        """`_scan` line by line, for a chunk with a newline inside quotes: the lines after
        such a newline are the same record's, which a reader does not count."""
        parts = chunk.split(b"\n")
        # A quote escaped by the last byte of the chunk before is no quote (chunks end
        # anywhere: the escape and its quote can be in two).
        skip = int(self._escape_next and chunk[:1] in (self._quote, self._escape))
        state = self._line
        for line in parts[:-1]:
            if self._quotes_odd(line[skip:]):
                self._in_quote = not self._in_quote
            skip = 0
            if self._in_quote:
                self._quoted_end(state)
            self._line_end(state, line)
            state = b"q" if self._in_quote else b""
        tail = parts[-1]
        own = tail[skip:]
        if self._quotes_odd(own):
            self._in_quote = not self._in_quote
        e = self._escape
        self._escape_next = e is not None and bool((len(own) - len(own.rstrip(e))) & 1)
        if state in (b"", b"\r"):
            head = (state + tail)[:2]
            state = head if head in (b"", b"\r") else b"x"
        self._line = state

    def _fill(self) -> bool:
        while not self._out:
            if self._eof:
                return False
            chunk = self._raw.read(BLOCK_SIZE)
            if not chunk:
                self._eof = True
                data, self._carry = self._carry, b""
            else:
                data = self._carry + chunk
                cut = data.rfind(b"\n") + 1
                data, self._carry = data[:cut], data[cut:]
            self._out = memoryview(self._filter(data))
        return True

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        if self._comment is None and size is not None and size >= 0:
            chunk = self._raw.read(size)  # a whole chunk of the user's when it fits
            if chunk:
                self._scan(chunk)
            return chunk
        return super().read(size)

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._comment is None:
            chunk = self.read(len(b))
            b[:len(chunk)] = chunk
            return len(chunk)
        if not self._fill():
            return 0
        n = min(len(b), len(self._out))
        b[:n] = self._out[:n]
        self._out = self._out[n:]
        return n


class Blocks(io.RawIOBase):
    """`head` bytes followed by the rest of a stream, read in blocks: `read(n)` joins
    whole reads of `rest` up to `n` bytes (one copy; none when one read fills it), so
    pyarrow gets blocks of its own size from a stream of the user's chunks. With
    `whole_head` the first read returns all of `head`, however long (pyarrow takes a
    longer block than it asked for)."""

    def __init__(self, head: bytes, rest: io.RawIOBase | io.BufferedIOBase,
                 whole_head: bool = False) -> None:
        self._head = head
        self._rest = rest
        self._whole = whole_head

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1, after: bytes = b"") -> bytes:  # type: ignore[override]
        """Up to `size` bytes (fewer only at the end), joined to `after` in one copy."""
        if size is None or size < 0:
            return after + self._head + self._rest.read()
        if self._whole and self._head:
            head, self._head = self._head, b""
            return after + head
        head, self._head = self._head[:size], self._head[size:]
        parts = [after, head]
        got = len(head)
        while got < size:
            data = self._rest.read(size - got)
            if not data:
                break
            parts.append(data)
            got += len(data)
        return b"".join(parts)

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)


class PacedReads:
    """A file for a reader that reads blocks on a thread of its own (pyarrow's streaming
    CSV reader: up to 32 blocks queued, not configurable, so 128 MiB of 4 MiB blocks when
    the runtime is slower than its input). `read` waits while the bytes handed out are
    more than `ahead` blocks past those of the batches the consumer took (`took()`, one
    batch per block): memory stays flat in the fragment's size, and the reader still has
    the next blocks ready when the consumer comes back.

    A wait gives up after `patience` seconds, so a block that yields no batch can slow
    the reader but never stall it.

    `close` ends the reader's reads: those after it get end of file without touching
    the source; `settle` then waits (bounded) until the reader's threads let go of the
    file. A reader thread still holding it when the interpreter exits aborts the
    process ("Fatal Python error: PyGILState_Release"), which would look like the
    connector's crash.
    """

    def __init__(self, raw: io.RawIOBase | io.BufferedIOBase, block: int = BLOCK_SIZE,
                 ahead: int = READ_AHEAD_BLOCKS, patience: float = 1.0) -> None:
        self._raw = raw
        self._block = block
        self._ahead = ahead
        self._patience = patience
        self._read = 0
        self._taken = 0
        self._cond = threading.Condition()
        self.closed = False

    def readable(self) -> bool:
        return True

    def _allowed(self) -> bool:
        return self.closed or self._read < (self._taken + 1 + self._ahead) * self._block

    def read(self, size: int = -1) -> bytes:
        with self._cond:
            self._cond.wait_for(self._allowed, timeout=self._patience)
            if self.closed:
                return b""
        data = self._raw.read(size)
        with self._cond:
            self._read += len(data)
        return data

    def took(self) -> None:
        """The consumer took a batch: the reader may read one block further."""
        with self._cond:
            self._taken += 1
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()  # a reader waiting for room wakes up to end of file

    def settle(self, timeout: float = 1.0) -> None:
        """Waits (bounded) until the closed reader's threads let go of this file: its
        I/O tasks drop their references a few ms after `close()`, each under the GIL,
        and one doing it while the interpreter exits aborts the process. Call it with
        one name of the caller's holding it: that, `self` and getrefcount's argument."""
        deadline = time.monotonic() + timeout
        while sys.getrefcount(self) > 3 and time.monotonic() < deadline:
            time.sleep(0.001)


def utf8_chunks(stream: io.RawIOBase, encoding: str) -> Iterator[bytes]:
    """The stream's bytes as UTF-8 (pyarrow's JSON reader takes nothing else)."""
    utf8 = codecs.lookup(encoding).name == "utf-8"
    decoder = None if utf8 else codecs.getincrementaldecoder(encoding)()
    while True:
        chunk = stream.read(BLOCK_SIZE)
        if decoder is None:
            if not chunk:
                return
            yield chunk
            continue
        if not chunk:
            tail = decoder.decode(b"", final=True)
            if tail:
                yield tail.encode("utf-8")
            return
        yield decoder.decode(chunk).encode("utf-8")

