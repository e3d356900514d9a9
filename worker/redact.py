"""Redaction of a connector's credentials from text that leaves its sandbox.

User code sees its credentials and can put them in anything it sends back: an
exception message (`int(token)` quotes the token), a traceback, a print. Before such
text is stored (Redis refresh records) or printed, every occurrence of a secret is
replaced: the raw credentials string, and, when it is JSON, every string value inside
it; each also in the escaped forms a message shows it in (repr, JSON, stripped).
Values shorter than MIN_SECRET are left alone: redacting "1" or "yes" everywhere
would destroy the text and hide nothing.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from worker.models import FragmentFailure

MIN_SECRET = 4
MARK = "[redacted]"


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _forms(secret: str) -> Iterator[str]:
    for s in (secret, secret.strip()):
        yield s
        yield repr(s)[1:-1]
        yield json.dumps(s)[1:-1]
        yield json.dumps(s, ensure_ascii=False)[1:-1]


class Redactor:
    """`redactor(text)` is `text` without the credentials it was built from."""

    def __init__(self, credentials: str | None) -> None:
        found: set[str] = set()
        if credentials:
            secrets = [credentials]
            with contextlib.suppress(ValueError, RecursionError):  # not JSON: raw only
                secrets += _strings(json.loads(credentials))
            for secret in secrets:
                found.update(f for f in _forms(secret) if len(f) >= MIN_SECRET)
        # Longest first: a secret that contains another is replaced whole.
        self._needles = sorted(found, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for needle in self._needles:
            if needle in text:
                text = text.replace(needle, MARK)
        return text

    def failure(self, e: FragmentFailure) -> FragmentFailure:
        """`e` with its message, traceback and log redacted (in place)."""
        if self._needles:
            e.message = self(e.message)
            e.traceback = self(e.traceback)
            e.log = self(e.log)
            e.args = (e.message,)
        return e
