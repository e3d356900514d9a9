"""The connector folder: `connector.yaml` + `connector.py`, loaded and validated.

This module is imported by the sandbox runtime as well as the host, so it depends on
pydantic and the standard library only. Every error names the file, the field and
the reason.
"""

from __future__ import annotations

import ast
import hashlib
import ipaddress
import os
import re
import stat
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from worker import column_types
from worker.errors import ConfigError

SPEC_FILE = "connector.yaml"
CODE_FILE = "connector.py"
REQUIRED_FUNCTIONS = ("list_objects", "read_bytes")



class SpecError(ConfigError):
    """A connector folder that cannot be used; the message names file, field and reason."""


# Tenant and connector names. worker/naming.py builds every id, key and path from them
# and relies on this grammar: '--' never occurs inside a name.
NAME_MAX = 63
NAME_RULE = ("1 to 63 characters of a-z, 0-9, and single '-' or '_' between them "
             "(no leading, trailing or doubled separator)")
_NAME = re.compile(r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$")


def name_problem(value: str) -> str | None:
    """Why `value` is not a valid tenant or connector name, or None."""
    if len(value) > NAME_MAX:
        return f"is {len(value)} characters long; the limit is {NAME_MAX}"
    if not _NAME.match(value):
        return f"must be {NAME_RULE}"
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# The project's own settings: never a connector's credentials, even on a developer's
# machine (a tenant's spec must not be able to name the worker's key or Redis).
RESERVED_ENV_PREFIXES = ("CONNECTOR_", "RQ_")
RESERVED_ENV = frozenset({"REDIS_URL"})


def reserved_env(name: str) -> bool:
    return name in RESERVED_ENV or name.startswith(RESERVED_ENV_PREFIXES)


# Credentials are sealed into the deployment record in Redis (outside the bundle quota)
# and opened by a worker before every session: a key file, a token or a service
# account's JSON is a few KiB.
MAX_CREDENTIALS_BYTES = 256 << 10


def read_credentials_file(path: Path) -> str:
    """A credentials file's text; ValueError says why not: it must be a regular file
    (a FIFO or a device would block the reader, or never end) of at most
    MAX_CREDENTIALS_BYTES. Opened without blocking and checked on the open descriptor,
    so a file swapped after a check is checked as what was opened."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("is not a regular file")
        if st.st_size > MAX_CREDENTIALS_BYTES:
            raise ValueError(f"is {st.st_size} bytes, over the {MAX_CREDENTIALS_BYTES} "
                             "byte limit for credentials")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_CREDENTIALS_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_CREDENTIALS_BYTES:  # it grew since fstat
        raise ValueError(f"is over the {MAX_CREDENTIALS_BYTES} byte limit for credentials")
    return data.decode()


def credentials_value_problem(value: str) -> str | None:
    """Why a credentials string (an environment variable's value) is too large, or None."""
    size = len(value.encode())
    if size > MAX_CREDENTIALS_BYTES:
        return (f"is {size} bytes, over the {MAX_CREDENTIALS_BYTES} byte limit for "
                "credentials")
    return None


def credentials_file_problem(file: str) -> str | None:
    """Why `file` cannot name a credentials file, or None: it must be a relative path
    that stays below the directory it is resolved in (the connector folder, or the
    tenant's directory on a worker)."""
    if not file or "\x00" in file:
        return f"{file!r} is not a file name"
    if file.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", file):
        return (f"{file!r} is an absolute path; give a path relative to the connector "
                "folder")
    if ".." in re.split(r"[/\\]", file):
        return f"{file!r} leaves the connector folder ('..' is not allowed)"
    return None


class Credentials(_Strict):
    """Where the credentials string comes from; it is read on the host, never stored in images."""

    env: str | None = None
    file: str | None = None

    def model_post_init(self, _: Any) -> None:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of 'env' or 'file'")

    @field_validator("env")
    @classmethod
    def _env(cls, v: str | None) -> str | None:
        if v is not None and reserved_env(v):
            raise ValueError(f"{v} is one of connector-host's own settings, never a "
                             "connector's credentials")
        return v

    @field_validator("file")
    @classmethod
    def _file(cls, v: str | None) -> str | None:
        problem = None if v is None else credentials_file_problem(v)
        if problem is not None:
            raise ValueError(problem)
        return v


class ParserSpec(_Strict):
    format: Literal["xsv", "json", "avro", "parquet", "custom"] = "xsv"
    # xsv
    delimiter: str = ","
    header: bool = True
    quote: str | None = '"'
    escape: str | None = None
    comment: str | None = None
    comment_prefix: str | None = Field(default=None, min_length=1)
    header_line_count: int = Field(default=0, ge=0)  # lines skipped before the header
    encoding: str = "utf-8"
    # A quoted value may hold a newline only when this says so: otherwise a quote left
    # open at a line's end (a stray quote that would take the next lines into one
    # value) fails the fragment naming the line.
    newlines_in_values: bool = False
    # json
    flatten: bool = False
    separator: str = "."
    # custom
    reader: Literal["text", "binary"] = "text"
    # any format: rows a fragment may reject (malformed or invalid) before it fails;
    # max_error_count replaces schema.max_errors when given
    max_error_count: int | None = Field(default=None, ge=0)
    max_error_percentage: float | None = Field(default=None, ge=0, le=100)

    @model_validator(mode="after")
    def _one_comment(self) -> ParserSpec:
        if self.comment is not None and self.comment_prefix is not None:
            raise ValueError("give 'comment' or 'comment_prefix', not both")
        return self

    @property
    def comment_marker(self) -> str | None:
        return self.comment_prefix if self.comment_prefix is not None else self.comment

    @field_validator("delimiter", "quote", "escape", "comment")
    @classmethod
    def _one_char(cls, v: str | None) -> str | None:
        if v is not None and len(v) != 1:
            raise ValueError(f"must be a single character, got {v!r}")
        return v


OnInvalid = Literal["fail", "skip", "default"]


class Column(_Strict):
    name: str
    type: str = "string"
    nullable: bool = True
    default: Any = None
    source: str | None = None
    format: str | None = None
    on_invalid: OnInvalid | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v:
            raise ValueError("column name must not be empty")
        return v

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        return column_types.normalise(v)

    @property
    def source_name(self) -> str:
        return self.source or self.name

    @model_validator(mode="after")
    def _format_is_for_dates(self) -> Column:
        if self.format is not None and self.type not in ("date", "timestamp"):
            raise ValueError(f"format applies to date and timestamp columns only (this "
                             f"column is {self.type})")
        return self

    @model_validator(mode="after")
    def _default_converts(self) -> Column:
        if self.default is None:
            return self
        # The runtime's own conversion decides, so `validate` and a refresh agree.
        from worker.runtime.convert import default_scalar

        try:
            default_scalar(self)
        except ValueError as e:
            raise ValueError(f"default {self.default!r} cannot be converted to "
                             f"{self.type}: {e}") from None
        return self


class Schema(_Strict):
    columns: list[Column] = Field(default_factory=list)
    on_invalid: OnInvalid = "fail"
    max_errors: int = Field(default=0, ge=0)
    # a declared column that no row of a fragment carries fails the fragment
    require_no_missing_fields: bool = True
    # a column in the data that is not declared fails the fragment
    require_no_extra_fields: bool = False
    # a typed input column (Parquet, Avro, JSON numbers) must already have the declared
    # type: no casting; text input (CSV, JSON strings) is always cast
    require_field_type_match_schema: bool = False

    @field_validator("columns")
    @classmethod
    def _unique(cls, v: list[Column]) -> list[Column]:
        if len(v) > column_types.MAX_COLUMNS:
            raise ValueError(f"{len(v)} columns declared, over the "
                             f"{column_types.MAX_COLUMNS} a table may have")
        seen: set[str] = set()
        for c in v:
            if c.name in seen:
                raise ValueError(f"column {c.name!r} is declared twice")
            seen.add(c.name)
        return v


_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?$", re.I)


def parse_size(value: int | str) -> int:
    """'256m', '1GiB', 1048576 -> bytes."""
    if isinstance(value, int):
        return value
    m = _SIZE.match(str(value).strip())
    if not m:
        raise ValueError(f"not a size: {value!r} (use e.g. 512m or 1g)")
    mult = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
    return int(float(m.group(1)) * mult)


# `limits.network: {allow: [...]}`. An entry is HOST:PORT, IP:PORT or CIDR:PORT, IPv4
# and TCP only, one port per entry (no ranges: each open port is listed on purpose).
# Private ranges are the point and are allowed; what no entry may open: loopback, the
# unspecified and "this network" block, link-local (cloud metadata lives at
# 169.254.169.254), multicast and reserved space, and anything wider than a /8 (so no
# 0.0.0.0/0-style wildcard). The host's own addresses are refused when the session
# starts (only the worker knows them), as are names that resolve into any of these.
MAX_ALLOW_ENTRIES = 64
MAX_ENTRY_CHARS = 260  # a 253-character name, ':' and a port
FORBIDDEN_NETWORKS: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "the unspecified/this-network block"),
    ("127.0.0.0/8", "loopback (this host)"),
    ("169.254.0.0/16", "link-local (cloud metadata endpoints live here)"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved (and broadcast)"),
)
MIN_PREFIX = 8
_HOST_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
                        r"(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\.?$")


class AllowTarget(_Strict):
    """One parsed allowlist entry: an IPv4 network (a single IP is a /32) or a DNS name
    (resolved and pinned by the worker when a session starts), and a TCP port."""

    entry: str
    host: str
    port: int
    is_name: bool


def forbidden_reason(net: ipaddress.IPv4Network) -> str | None:
    """Why an allowlist may not open `net` (an address is a /32), or None."""
    if net.prefixlen < MIN_PREFIX:
        return f"prefix /{net.prefixlen} is wider than /{MIN_PREFIX}: list the networks you need"
    for block, what in FORBIDDEN_NETWORKS:
        if net.overlaps(ipaddress.IPv4Network(block)):
            return f"{net} is or includes {what}, {block}"
    return None


def parse_allow_entry(entry: str) -> AllowTarget:
    """'api.example.com:443', '10.20.0.0/16:5432' -> AllowTarget; ValueError says why not."""
    if not isinstance(entry, str) or not entry.strip():
        raise ValueError("empty entry; give HOST:PORT")
    text = entry.strip()
    if text.startswith("[") or text.count(":") > 1:
        raise ValueError("IPv6 is not supported (sandbox networks are IPv4 only)")
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError("no port; give HOST:PORT, IP:PORT or CIDR:PORT")
    if re.fullmatch(r"[0-9]+\s*-\s*[0-9]+", port_text):
        raise ValueError("port ranges are not supported; list each port")
    if not re.fullmatch(r"[0-9]{1,5}", port_text):
        raise ValueError(f"{port_text!r} is not a port")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range (1-65535)")
    if re.fullmatch(r"[0-9./]+", host):
        try:
            net = ipaddress.IPv4Network(host, strict=False)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv4 address or network") from None
        if net.network_address != ipaddress.IPv4Address(host.split("/")[0]):
            raise ValueError(f"{host} has host bits set; did you mean {net}?")
        if net.prefixlen == 32 and net.network_address.is_unspecified:
            raise ValueError("0.0.0.0 is the unspecified address")
        problem = forbidden_reason(net)
        if problem is not None:
            raise ValueError(problem)
        return AllowTarget(entry=entry, host=str(net), port=port, is_name=False)
    name = host.lower()
    if not _HOST_NAME.fullmatch(name):
        raise ValueError(f"{host!r} is not a host name (no wildcards; letters, digits, "
                         "'-' and '.')")
    if name.rstrip(".") == "localhost" or name.rstrip(".").endswith(".localhost"):
        raise ValueError(f"{host} is loopback (this host)")
    return AllowTarget(entry=entry, host=name.rstrip("."), port=port, is_name=True)


class NetworkAllow(_Strict):
    """`network: {allow: [...]}`: exactly these TCP destinations, everything else fenced."""

    allow: list[str]

    @field_validator("allow")
    @classmethod
    def _entries(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("lists nothing; use `network: none` for no network")
        if len(v) > MAX_ALLOW_ENTRIES:
            raise ValueError(f"{len(v)} entries; at most {MAX_ALLOW_ENTRIES} entries")
        problems = []
        for entry in v:
            if len(entry) > MAX_ENTRY_CHARS:
                problems.append(f"{entry[:40]!r}...: longer than {MAX_ENTRY_CHARS} characters")
                continue
            try:
                parse_allow_entry(entry)
            except ValueError as e:
                problems.append(f"{entry!r}: {e}")
        if problems:
            raise ValueError("; ".join(problems))
        return v

    @property
    def targets(self) -> list[AllowTarget]:
        return [parse_allow_entry(e) for e in self.allow]


def _network_kind(v: Any) -> str:
    return "network-allow" if isinstance(v, dict | NetworkAllow) else "network-mode"


# Tags of the `network` union: internal, left out of error locations (see _loc).
_UNION_TAGS = frozenset({"network-allow", "network-mode"})
Network = Annotated[
    Annotated[Literal["none", "egress"], Tag("network-mode")]
    | Annotated[NetworkAllow, Tag("network-allow")],
    Discriminator(_network_kind)]


MIN_MEMORY = 16 << 20
MIN_CPUS = 0.01
# field -> (least value, as shown, unit of the value given)
_MINIMUMS = {"memory": (MIN_MEMORY, f"{MIN_MEMORY >> 20} MiB", " bytes"),
             "cpus": (MIN_CPUS, f"{MIN_CPUS:g}", "")}


class Limits(_Strict):
    memory: Annotated[int, Field(gt=0)] = 512 << 20
    cpus: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    timeout: float = Field(default=300.0, gt=0, allow_inf_nan=False)
    max_output_bytes: Annotated[int, Field(gt=0)] = 1 << 30
    pids: int = Field(default=128, gt=0)
    network: Network = "none"
    runtime: Literal["runc", "runsc"] = "runc"

    @field_validator("memory", "max_output_bytes", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int:
        return parse_size(v)

    # Below these Docker refuses the container (memory under 6 MB; a CPU quota under a
    # hundredth of a CPU fails the cgroup write): the tenant's setting, refused here
    # rather than failing every session as the platform's.
    @field_validator("memory", "cpus")
    @classmethod
    def _minimum(cls, v: float, info: ValidationInfo) -> float:
        least, shown, unit = _MINIMUMS[str(info.field_name)]
        if v < least:
            given = v if isinstance(v, int) else f"{v:g}"
            raise ValueError(f"{given}{unit} is under the minimum of {shown}")
        return v


# A refresh re-armed at once (0s) loops on the shared workers; a year is the longest
# interval a date can be computed from without overflowing, with room to spare.
MIN_SCHEDULE_SECONDS = 1
MAX_SCHEDULE_SECONDS = 365 * 86400


class Schedule(_Strict):
    every: str

    @field_validator("every")
    @classmethod
    def _every(cls, v: str) -> str:
        seconds = parse_interval(v)
        if not MIN_SCHEDULE_SECONDS <= seconds <= MAX_SCHEDULE_SECONDS:
            raise ValueError(f"{v!r} is out of range: from 1s to 365d")
        return v

    @property
    def seconds(self) -> int:
        return parse_interval(self.every)


def parse_interval(value: str) -> int:
    m = re.fullmatch(r"(\d+)\s*([smhd])", value.strip())
    if not m:
        raise ValueError(f"not an interval: {value!r} (use e.g. 30s, 15m, 2h, 1d)")
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


# What pip takes for an archive file rather than a package name (pip's own
# ARCHIVE_EXTENSIONS): `evil-1.0.tar.gz` is read from where pip runs.
PIP_ARCHIVE_SUFFIXES = (".whl", ".zip", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tar.xz",
                        ".txz", ".tlz", ".tar.lz", ".tar.lzma", ".tar")


class ConnectorSpec(_Strict):
    name: str
    tenant: str = "default"
    packages: list[str] = Field(default_factory=list)
    credentials: Credentials | None = None
    parser: ParserSpec = Field(default_factory=ParserSpec)
    schema_: Schema = Field(default_factory=Schema, alias="schema")
    limits: Limits = Field(default_factory=Limits)
    schedule: Schedule | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("name", "tenant")
    @classmethod
    def _name(cls, v: str) -> str:
        # One grammar for every name: ids, keys, images and paths are built from them.
        problem = name_problem(v)
        if problem is not None:
            raise ValueError(problem)
        return v

    @field_validator("packages")
    @classmethod
    def _pins(cls, v: list[str]) -> list[str]:
        for p in v:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9_,.-]+\])?\s*"
                                r"((==|>=|<=|~=|!=|<|>)\s*[A-Za-z0-9.*+!-]+\s*,?\s*)*", p):
                raise ValueError(f"not a pip requirement: {p!r}")
            first = re.match(r"[A-Za-z0-9._-]+", p)
            if first and first.group().lower().endswith(PIP_ARCHIVE_SUFFIXES):
                raise ValueError(
                    f"{p!r} names a file (pip reads a requirement ending in "
                    f"{', '.join(PIP_ARCHIVE_SUFFIXES)} as a path, and builds a source "
                    "archive on the host); give a package name and version")
        seen: dict[str, str] = {}
        for p in v:
            # a distribution named twice is at best redundant, at worst two versions
            # that no resolver can satisfy together; one entry holds all its specifiers
            name = re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~\s]", p, maxsplit=1)[0]).lower()
            if name in seen and re.sub(r"\s+", "", seen[name]) != re.sub(r"\s+", "", p):
                raise ValueError(f"{seen[name]!r} and {p!r} name the same distribution: "
                                 f"list it once (e.g. '{name}>=2,<3')")
            seen[name] = p
        return v

    @field_validator("schema_", mode="before")
    @classmethod
    def _schema_list(cls, v: Any) -> Any:
        # `schema:` may be a bare list of columns: the common case needs no nesting.
        return {"columns": v} if isinstance(v, list) else v


class Connector(BaseModel):
    """A loaded, validated connector folder."""

    model_config = ConfigDict(frozen=True)

    path: Path
    spec: ConnectorSpec
    code: str

    @property
    def code_hash(self) -> str:
        h = hashlib.sha256()
        h.update(self.code.encode())
        h.update(self.spec.model_dump_json(by_alias=True).encode())
        return h.hexdigest()

    def read_credentials(self) -> str | None:
        """The credentials string for context(), resolved where this process runs."""
        c = self.spec.credentials
        if c is None:
            return None
        if c.env is not None:
            if c.env not in os.environ:
                raise SpecError(f"{self.path / SPEC_FILE}: credentials.env: "
                                f"environment variable {c.env} is not set")
            value = os.environ[c.env]
            problem = credentials_value_problem(value)
            if problem is not None:
                raise SpecError(f"{self.path / SPEC_FILE}: credentials.env: {c.env} "
                                f"{problem}")
            return value
        assert c.file is not None
        folder = self.path.resolve()
        f = (folder / c.file).resolve()
        if not f.is_relative_to(folder):  # a link out of the folder
            raise SpecError(f"{self.path / SPEC_FILE}: credentials.file: {c.file} resolves "
                            "outside the connector folder")
        try:
            return read_credentials_file(f)
        except OSError as e:
            raise SpecError(f"{self.path / SPEC_FILE}: credentials.file: cannot read {f}: "
                            f"{e.strerror}") from None
        except ValueError as e:  # not a regular file, or too large
            raise SpecError(f"{self.path / SPEC_FILE}: credentials.file: {c.file} "
                            f"{e}") from None


def _format_validation(path: Path, err: ValidationError, raw: Any = None) -> str:
    lines = []
    for e in err.errors():
        loc = _loc(e["loc"], raw) or "(top level)"
        msg = (_unknown_field(e["loc"]) if e["type"] == "extra_forbidden"
               else e["msg"].removeprefix("Value error, "))
        lines.append(f"{path}: {loc}: {msg}")
    return "\n".join(lines)


def _sections() -> dict[str, type[BaseModel]]:
    """The mapping a key of connector.yaml sits in, by the key above it."""
    return {"": ConnectorSpec, "credentials": Credentials, "parser": ParserSpec,
            "schema": Schema, "schema_": Schema, "columns": Column, "limits": Limits,
            "network": NetworkAllow, "schedule": Schedule}


def _unknown_field(loc: tuple[Any, ...]) -> str:
    """A key no model has (a typo, usually): the one it resembles, else the choices."""
    import difflib

    above = [p for p in loc[:-1] if isinstance(p, str) and p not in _UNION_TAGS]
    model = _sections().get(above[-1] if above else "")
    if model is None:
        return "unknown field"
    known = [f.alias or n for n, f in model.model_fields.items()]
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    if close:
        return f"unknown field (did you mean {close[0]!r}?)"
    return f"unknown field (expected one of {', '.join(known)})"


def _loc(loc: tuple[Any, ...], raw: Any) -> str:
    """('schema', 'columns', 2, 'nulable') -> 'schema.columns[amount].nulable': a column
    is named, not counted (a bare `schema:` list counts as its columns)."""
    parts: list[str] = []
    columns: Any = None
    if isinstance(raw, dict):
        sch = raw.get("schema")
        columns = sch if isinstance(sch, list) else (
            sch.get("columns") if isinstance(sch, dict) else None)
    for i, p in enumerate(loc):
        if p in _UNION_TAGS:
            continue
        p = "schema" if p == "schema_" else p
        if (isinstance(p, int) and i >= 2 and loc[i - 1] == "columns"
                and isinstance(columns, list) and p < len(columns)
                and isinstance(columns[p], dict) and columns[p].get("name")):
            parts[-1] += f"[{columns[p]['name']}]"
        elif isinstance(p, int):
            parts[-1] += f"[{p}]"
        else:
            parts.append(str(p))
    return ".".join(parts)


# Values a connector.yaml may stand for once its aliases are expanded. YAML aliases
# share one object, but validation, JSON defaults and the stored deployment copy it
# per reference: a few hundred bytes of nested aliases would stand for billions.
MAX_SPEC_VALUES = 200_000
# Characters of text it may stand for, aliases expanded: the spec is stored in Redis as
# the deployment record, uncompressed and outside the tenant's bundle quota (which counts
# the compressed bundle), so 2,000 references to one 60 KB string would store 120 MB.
MAX_SPEC_CHARS = 1 << 20
# Bytes of the file itself, checked before YAML parses it (the parser holds many times
# a document's size; a file of one repeated letter packs into a bundle of almost nothing).
MAX_SPEC_BYTES = 256 << 10


def _expansion_problem(raw: Any, max_values: int, max_chars: int) -> str | None:
    """What `raw`, with shared objects counted at every reference, holds too much of
    (values, or characters of text), or None. Stops counting at a limit, so a bomb
    costs O(limit)."""
    stack, seen, chars = [raw], 0, 0
    while stack:
        v = stack.pop()
        seen += 1
        if seen > max_values:
            return (f"expands to more than {max_values} values (YAML aliases repeat what "
                    "they point at)")
        if isinstance(v, str):
            chars += len(v)
            if chars > max_chars:
                return (f"expands to more than {max_chars} characters of text (YAML "
                        "aliases repeat what they point at); keep data in other files")
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return None


def _yaml_problem(e: Exception) -> str:
    """PyYAML's report on one line: where and what (its own text spans several lines,
    quoting the source with a caret, which a terminal-safe print shows as `\\n`)."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None)
    if mark is None or problem is None:
        return " ".join(str(e).split())
    where = f"line {mark.line + 1}, column {mark.column + 1}"
    context, context_mark = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context and context_mark is not None:
        return (f"{where}: {problem} ({context} that starts at line "
                f"{context_mark.line + 1}, column {context_mark.column + 1})")
    return f"{where}: {problem}"


def parse_spec(path: Path, text: str) -> ConnectorSpec:
    import yaml  # host only: the sandbox runtime never parses YAML

    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: not valid YAML: {_yaml_problem(e)}") from None
    except RecursionError:
        raise SpecError(f"{path}: nested too deeply") from None
    problem = _expansion_problem(raw, MAX_SPEC_VALUES, MAX_SPEC_CHARS)
    if problem is not None:
        raise SpecError(f"{path}: {problem}")
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping of fields, got {type(raw).__name__}")
    try:
        return ConnectorSpec.model_validate(raw)
    except ValidationError as e:
        raise SpecError(_format_validation(path, e, raw)) from None


# connector.py is parsed on the host (validate, deploy, every worker loading a bundle),
# and Python's parser holds some 600 bytes per byte of short statements: the file is
# bounded first, so a small, well-compressed bundle cannot take a worker's memory.
MAX_CODE_BYTES = 256 << 10


def check_code(path: Path, code: str, spec: ConnectorSpec) -> None:
    """Static checks only: the code is never imported on the host."""
    try:
        tree = ast.parse(code, filename=str(path))
    except SyntaxError as e:
        raise SpecError(f"{path}:{e.lineno}: syntax error: {e.msg}") from None
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    defined |= {
        t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
        if isinstance(t, ast.Name)
    }
    needed = list(REQUIRED_FUNCTIONS)
    if spec.parser.format == "custom":
        needed.append("parser_function")
    missing = [f for f in needed if f not in defined]
    if missing:
        raise SpecError(f"{path}: missing function(s): {', '.join(missing)}")


def load_connector(folder: str | os.PathLike[str]) -> Connector:
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise SpecError(f"{folder}: not a connector folder (no such directory)")
    spec_path, code_path = folder / SPEC_FILE, folder / CODE_FILE
    for p in (spec_path, code_path):
        if not p.is_file():
            raise SpecError(f"{p}: missing")
    spec_size = spec_path.stat().st_size
    if spec_size > MAX_SPEC_BYTES:
        raise SpecError(f"{spec_path}: connector.yaml is {spec_size} bytes, over the "
                        f"{MAX_SPEC_BYTES} byte limit (keep data in other files of the "
                        "folder)")
    spec = parse_spec(spec_path, spec_path.read_text())
    size = code_path.stat().st_size
    if size > MAX_CODE_BYTES:
        raise SpecError(f"{code_path}: connector.py is {size} bytes, over the "
                        f"{MAX_CODE_BYTES} byte limit (keep data and helper modules in "
                        "other files of the folder)")
    code = code_path.read_text()
    check_code(code_path, code, spec)
    return Connector(path=folder, spec=spec, code=code)
