"""The original's socket.io API, as data: its requests turned into our events, our
events into its answers (``../shared/seed/tidzam-readme.md``). Pure: no I/O.

- A window's broadcast on ``sys``: ``[{chan, analysis: {time, result, predicitions}}]``,
  ``time`` as ``YYYY-MM-DD-HH-MM-SS.mmm`` (UTC). The seed's misspelt ``predicitions`` is
  kept for its clients, with a correctly spelt ``predictions`` beside it, and ``source``
  and ``model`` added (the original had one source per analyser).
- ``loadsource`` (name, url, database, date, channels, is_permanent, format) becomes a
  ``SourceAdded``; the gateway takes network URLs only (http, https, rtsp, rtmp, icecast)
  and archive databases by name (a folder of the archive root), never a local path.
- ``SampleExtractionRules`` ``set rules``: ``{"<source>[:<channels>]": {rate, classes,
  length, ...}}`` becomes one ``ExtractionRule`` per key.

Every refusal is a ``SeedRequestError`` whose text goes back to the client as the seed's
``{"error": "..."}``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError

from bus_schemas import ExtractionRule, ExtractionRulesSet, Prediction, SourceAdded
from bus_schemas.errors import TidzamError

URL_SCHEMES = ("http", "https", "rtsp", "rtmp", "icecast")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # whole string (fullmatch)
SEED_DATE = "%Y-%m-%d-%H-%M-%S"
MAX_DATE = datetime(2262, 4, 11, tzinfo=UTC)  # nanoseconds still fit a signed 64-bit int
MAX_RULES = 256
MAX_CLASSES = 256  # class patterns in one rule
MAX_CHANNEL = 1023  # a source's channels, as the seed's requests name them
MAX_READ_CHANNEL = 4095  # bus_schemas.base.Channel: what a read may ask for
MAX_LIMIT = 10_000  # rows one history request returns at most
# an extracted sample's id (consumers.extractor: <source>-<channel>-<UTC start>-<model>)
SAMPLE_ID = r"^[A-Za-z0-9_.:@+-]{1,200}$"


class SeedRequestError(TidzamError, ValueError):
    """A request the gateway refuses; its text is sent back as ``{"error": text}``."""


def error(text: str) -> dict[str, str]:
    return {"error": text}


def seed_time(ns: int) -> str:
    """``YYYY-MM-DD-HH-MM-SS.mmm`` (UTC), the seed's broadcast time."""
    t = datetime.fromtimestamp(ns // 1_000_000 / 1000, UTC)
    return t.strftime(SEED_DATE) + f".{t.microsecond // 1000:03d}"


def analysis(p: Prediction) -> dict[str, Any]:
    """One window of one channel, in the seed's broadcast shape."""
    scores = {label: round(float(s), 6) for label, s in zip(p.labels, p.scores, strict=True)}
    return {"chan": p.channel, "source": p.source,
            "analysis": {"time": seed_time(p.window_start_ns), "result": list(p.result),
                         "predicitions": scores, "predictions": scores,
                         "model": f"{p.model_id}@{p.model_version}"}}


def _request(data: Any, key: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise SeedRequestError("request must be a JSON.")
    body = data.get(key)
    if not isinstance(body, dict):
        raise SeedRequestError(f"{key} must be an object")
    return body


def _name(value: Any, what: str) -> str:
    # fullmatch: ``$`` would take a name ending in a newline (then a bad NATS subject)
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise SeedRequestError(f"{what} must be 1-64 letters, digits, '-' or '_' "
                               f"(starting with a letter or digit), got {str(value)[:80]!r}")
    return value


def _channels(value: Any) -> tuple[int, ...]:
    """``"1,2"``, ``[1, 2]`` or ``""``/None (every channel)."""
    if value in (None, "", []):
        return ()
    items: Iterable[Any] = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) and not isinstance(value, str):
        raise SeedRequestError("channels must be a list of channel numbers or '1,2,...'")
    out = []
    for item in items:
        if isinstance(item, list | dict):
            raise SeedRequestError("channels must be a list of channel numbers or '1,2,...'")
        text = str(item).strip()
        # ASCII digits only: '²'.isdigit() and int() of thousands of digits both raise
        if not (text.isascii() and text.isdigit() and len(text) <= 4
                and int(text) <= MAX_CHANNEL):
            raise SeedRequestError(f"channel {text[:20]!r} is not a channel number "
                                   f"(0-{MAX_CHANNEL})")
        out.append(int(text))
    return tuple(out)


def _printable(value: str, what: str) -> str:
    """No control characters (NUL, newlines), no lone surrogates (not UTF-8)."""
    if not value.isprintable():
        raise SeedRequestError(f"{what} must be printable text (no control characters)")
    return value


def read_filters(source: Any, channel: Any, label: Any) -> tuple[str | None, int | None,
                                                                 str | None]:
    """The filters of a read (history, REST), checked: a name, a channel number, a label
    of printable text (PostgreSQL takes no NUL, UTF-8 no lone surrogate)."""
    if source is not None:
        _name(source, "source")
    if channel is not None and (not isinstance(channel, int) or isinstance(channel, bool)
                                or not 0 <= channel <= MAX_READ_CHANNEL):
        raise SeedRequestError(f"channel must be a channel number (0-{MAX_READ_CHANNEL})")
    if label is not None and (not isinstance(label, str) or len(label) > 128
                              or not label.isprintable()):
        raise SeedRequestError("label must be printable text of at most 128 characters")
    return source, channel, label


def load_source(data: Any, archive_root: Any, now_ns: int) -> SourceAdded:
    """``{'sys': {'loadsource': {...}}}`` → ``SourceAdded`` (``archive_root``: a Path, where
    the databases are folders named after them)."""
    body = _request(data, "loadsource")
    name = _name(body.get("name"), "name")
    url = body.get("url") or ""
    if not isinstance(url, str) or len(url) > 2048:
        raise SeedRequestError("url must be a string of at most 2048 characters")
    if url:
        _printable(url, "url")
        try:
            parts = urlsplit(url)
            hostname, _ = parts.hostname, parts.port  # the port: 0-65535
        except ValueError:  # 'http://[::1', a netloc changed by NFKC normalisation
            hostname = None
        if hostname is None or parts.scheme.lower() not in URL_SCHEMES:
            raise SeedRequestError(f"url must be a network stream ({', '.join(URL_SCHEMES)}"
                                   "://host/...); local files are not loaded from here")
    database = body.get("database") or ""
    folder = ""
    if database:
        _name(database, "database")
        if archive_root is None:
            raise SeedRequestError("this gateway has no archive folder (TIDZAM_ARCHIVE_DIR)")
        path = archive_root / database
        if not path.is_dir():
            raise SeedRequestError(f"no database {database!r}")
        folder = str(path)
    if not url and not folder:
        raise SeedRequestError("loadsource needs a url or a database")
    date_ns = None
    date = body.get("date")
    if date not in (None, "", "now"):
        if not isinstance(date, str) or not date.isascii():  # strptime takes '２０２５'
            raise SeedRequestError("date must be 'YYYY-MM-DD-HH-MM-SS'")
        try:
            when = datetime.strptime(date, SEED_DATE).replace(tzinfo=UTC)
        except ValueError as exc:
            raise SeedRequestError(f"date must be 'YYYY-MM-DD-HH-MM-SS', got {date[:40]!r}"
                                   ) from exc
        if not datetime(1970, 1, 1, tzinfo=UTC) <= when < MAX_DATE:
            raise SeedRequestError(f"date must be from 1970 to {MAX_DATE.year - 1}")
        date_ns = int(when.timestamp()) * 1_000_000_000
    permanent = body.get("is_permanent", False)
    fmt = body.get("format", "ogg") or "ogg"
    if not isinstance(permanent, bool) or fmt not in ("ogg", "copy"):
        raise SeedRequestError("is_permanent must be true or false, format 'ogg' or 'copy'")
    try:
        return SourceAdded(source=name, kind="archive" if folder else "url",
                           location=url, channels=_channels(body.get("channels")),
                           permanent=permanent, database=folder, date_ns=date_ns,
                           format=fmt, at_ns=now_ns)
    except ValidationError as exc:
        raise SeedRequestError(exc.errors()[0]["msg"]) from exc


def unload_name(body: Any) -> str:
    """The name of ``unloadsource`` (or the seed's ``loadsource`` with only a name)."""
    if not isinstance(body, dict):
        raise SeedRequestError("unloadsource must be {'name': ...}")
    return _name(body.get("name"), "name")


RULE_KEYS = {"rate", "classes", "length", "length_s", "before_s", "after_s", "centred",
             "cooldown_s", "destination"}


def rules_from_seed(data: Any, now_ns: int, by: str) -> ExtractionRulesSet:
    """``{'set': 'rules', 'rules': {...}}`` → the whole new rule set."""
    if not isinstance(data, dict) or not isinstance(data.get("rules"), dict):
        raise SeedRequestError("set rules needs 'rules': {source: {rate, classes, ...}}")
    if len(data["rules"]) > MAX_RULES:
        raise SeedRequestError(f"at most {MAX_RULES} rules")
    rules = []
    for key, spec in data["rules"].items():
        source, _, channels = str(key).partition(":")
        if not isinstance(spec, dict):
            raise SeedRequestError(f"rule {str(key)[:64]!r} must be an object")
        unknown = set(spec) - RULE_KEYS
        if unknown:
            raise SeedRequestError(f"rule {str(key)[:64]!r}: unknown field(s) "
                                   f"{sorted(map(str, unknown))[:5]}")
        fields: dict[str, Any] = {k: v for k, v in spec.items() if k not in ("length",
                                                                          "classes")}
        if "length" in spec:
            fields["length_s"] = spec["length"]
        classes = spec.get("classes", "*")
        fields["classes"] = tuple(c.strip() for c in classes.split(",")) \
            if isinstance(classes, str) else classes
        if isinstance(fields["classes"], list | tuple) and len(fields["classes"]) > MAX_CLASSES:
            raise SeedRequestError(f"rule {str(key)[:64]!r}: at most {MAX_CLASSES} classes")
        if isinstance(fields.get("rate"), str) and fields["rate"] != "auto":
            raise SeedRequestError(f"rule {str(key)[:64]!r}: rate must be 'auto' or 0-1")
        try:
            rules.append(ExtractionRule(source=source, channels=_channels(channels),
                                        **fields))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(map(str, first["loc"]))
            raise SeedRequestError(f"rule {str(key)[:64]!r}: {where}: {first['msg']}"
                                   ) from exc
        # the patterns' ``$`` lets a trailing newline through: none in a stored rule
        rule = rules[-1]
        for text in (rule.source, rule.destination, *rule.classes):
            _printable(text, f"rule {str(key)[:64]!r}: {text[:40]!r}")
    try:
        return ExtractionRulesSet(rules=tuple(rules), at_ns=now_ns, by=by)
    except ValidationError as exc:
        raise SeedRequestError(exc.errors()[0]["msg"]) from exc


def rules_to_seed(rule_set: ExtractionRulesSet) -> dict[str, Any]:
    """The rule set in force, keyed as ``set rules`` takes it."""
    out: dict[str, Any] = {}
    for rule in rule_set.rules:
        key = rule.source + (":" + ",".join(map(str, rule.channels)) if rule.channels else "")
        body = rule.model_dump(mode="json", exclude={"source", "channels"})
        body["classes"] = ",".join(rule.classes)
        out[key] = body
    return out


def filters_sql(*pairs: tuple[str, Any]) -> tuple[str, tuple[Any, ...]]:
    """`` WHERE a = %s AND b >= %s`` for the pairs whose value is given (fixed columns)."""
    parts, params = [], []
    for column, value in pairs:
        if value is not None:
            parts.append(f"{column} %s" if " " in column else f"{column} = %s")
            params.append(value)
    return (" WHERE " + " AND ".join(parts)) if parts else "", tuple(params)


class _Time(BaseModel):
    at: datetime


def iso_time(value: Any, what: str) -> datetime | None:
    """A history request's ISO time (None for none); SeedRequestError otherwise."""
    if value is None:
        return None
    try:
        return _Time(at=value).at
    except ValueError as exc:
        raise SeedRequestError(f"{what} must be an ISO time") from exc


def json_value(value: Any) -> Any:
    """A database value as JSON carries it (times as ISO 8601)."""
    return value.isoformat() if isinstance(value, datetime) else value
