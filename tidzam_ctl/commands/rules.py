"""``tidzam_ctl rules set | get | rm``: the sample extraction rules.

The rule set is one ``ExtractionRulesSet`` event on CONTROL; each change publishes
the whole new set, so the history is kept (``get --at``) and the extractor follows
the last one. A change reads the set in force, edits it and publishes it only if
nobody published another meanwhile (JetStream's expected last subject sequence):
two users editing at once never silently undo each other.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from bus_schemas import ExtractionRule, ExtractionRulesSet
from tidzam_ctl.errors import EXIT_OK, EXIT_USAGE, CliError
from tidzam_ctl.settings import CtlSettings
from tidzam_ctl.stack.stack import Stack
from tidzam_ctl.timeparse import parse_time

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

DESCRIPTION = """\
Which windows the extractor saves as samples (FLAC + JSON sidecar) for review and
retraining. A rule applies to a source (a name, or a pattern such as 'pond*' or '*')
and optionally to some channels; the most specific rule of a channel wins.

  rate auto    rarer classes are saved more often (the original's dynamic distribution,
               normalised among sibling classes); 'unknown' windows and windows where
               the model hesitates between two classes are always candidates
  rate 0.25    a matching window is saved with that probability

Examples:
  tidzam_ctl rules set '*' --classes unknown --rate auto
  tidzam_ctl rules set pond --channels 0,3 --classes 'birds-*,frog' --rate 0.2 \\
      --before 1 --after 1 --centred --cooldown 30
  tidzam_ctl rules get --at 2h
  tidzam_ctl rules rm pond --channels 0,3
"""


def add_rules_parser(sub: Any) -> None:
    p = sub.add_parser("rules", help="sample extraction rules: set, get, rm",
                       description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    rsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    s = rsub.add_parser("set", help="add or replace the rule of a source (and channels)")
    s.add_argument("source", metavar="SOURCE", help="source name or pattern ('*': every one)")
    s.add_argument("--channels", help="comma-separated channel numbers (default: every one)")
    s.add_argument("--classes", default="*",
                   help="comma-separated class patterns: birds-*, unknown, * (default *)")
    s.add_argument("--rate", default="auto",
                   help="'auto' (default) or a probability between 0 and 1")
    s.add_argument("--length", type=float, metavar="S",
                   help="sample length in seconds around the window's middle "
                   "(default: the window itself)")
    s.add_argument("--before", type=float, default=0.5, metavar="S",
                   help="context before the window, seconds (default 0.5)")
    s.add_argument("--after", type=float, default=0.5, metavar="S",
                   help="context after the window, seconds (default 0.5)")
    s.add_argument("--centred", action="store_true",
                   help="only windows whose sound sits in the middle (quiet edges)")
    s.add_argument("--cooldown", type=float, default=5.0, metavar="S",
                   help="seconds a channel waits after a sample before the next (default 5)")
    s.add_argument("--destination", default="samples",
                   help="sub-folder of the samples folder (default 'samples')")
    s.add_argument("--json", action="store_true", help="print the new rule set as JSON")
    g = rsub.add_parser("get", help="the rules in force (now, or at a past time)")
    g.add_argument("--at", metavar="TIME", help="ISO time or an age like 2h, 3d (default: now)")
    g.add_argument("--json", action="store_true", help="the rule set as JSON")
    r = rsub.add_parser("rm", help="remove the rule of a source (and channels)")
    r.add_argument("source", metavar="SOURCE")
    r.add_argument("--channels", help="the channels of the rule (default: the rule for "
                   "every channel)")


def _channels(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        return tuple(int(c) for c in re.split(r"[,\s]+", text.strip()) if c)
    except ValueError:
        raise CliError(f"bad --channels {text!r}: give numbers such as 0,3", EXIT_USAGE) from None


def rule_from_args(args: argparse.Namespace) -> ExtractionRule:
    """The rule the options describe, validated (a clear error for each bad value)."""
    rate: str | float = args.rate
    if args.rate != "auto":
        try:
            rate = float(args.rate)
        except ValueError:
            raise CliError(f"bad --rate {args.rate!r}: 'auto' or a probability between 0 "
                           "and 1", EXIT_USAGE) from None
    try:
        return ExtractionRule(
            source=args.source, channels=_channels(args.channels),
            classes=tuple(c.strip() for c in args.classes.split(",") if c.strip()),
            rate=rate, length_s=args.length, before_s=args.before, after_s=args.after,
            centred=args.centred, cooldown_s=args.cooldown, destination=args.destination)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "rule"
        raise CliError(f"bad rule: {where}: {first['msg']}", EXIT_USAGE) from None


def rule_json(rule: ExtractionRule) -> dict[str, Any]:
    return rule.model_dump(mode="json")


def rules(settings: CtlSettings, args: argparse.Namespace) -> int:
    stack = Stack(settings)
    if args.action == "get":
        at_ns = None
        if args.at:
            try:
                at_ns = int(parse_time(args.at).timestamp() * 1e9)
            except ValueError as exc:
                raise CliError(str(exc), EXIT_USAGE) from None
        current = asyncio.run(rules_at(stack, at_ns))
        _print(current, args.json)
        return EXIT_OK
    if args.action == "set":
        rule = rule_from_args(args)
        if not any(c in rule.source for c in "*?"):
            asyncio.run(_known_source(stack, rule.source))
        new = asyncio.run(change(stack, lambda old: (*[r for r in old if r.key != rule.key],
                                                      rule)))
        console.print(f"rule for {_where(rule.key)} set; {len(new.rules)} rule(s) in force")
        _print(new, args.json)
        return EXIT_OK
    key = (args.source, tuple(sorted(_channels(args.channels))))
    removed: list[ExtractionRule] = []

    def drop(old: tuple[ExtractionRule, ...]) -> tuple[ExtractionRule, ...]:
        removed[:] = [r for r in old if r.key == key]
        if not removed:
            raise CliError(f"no rule for {_where(key)} (tidzam_ctl rules get lists them)",
                           EXIT_USAGE)
        return tuple(r for r in old if r.key != key)

    new = asyncio.run(change(stack, drop))
    console.print(f"rule for {_where(key)} removed; {len(new.rules)} rule(s) in force")
    return EXIT_OK


def _where(key: tuple[str, tuple[int, ...]]) -> str:
    source, channels = key
    return f"{source}" + (f" channels {','.join(map(str, channels))}" if channels else "")


async def rules_at(stack: Stack, at_ns: int | None = None) -> ExtractionRulesSet:
    """The rule set in force at ``at_ns`` (None: now); an empty set before the first."""
    from bus.connect import connect, ensure_streams
    from bus.history import read_rule_sets

    nc = await connect(stack.nats_url, "tidzam_ctl-rules")
    try:
        await ensure_streams(nc.jetstream())
        history, _ = await read_rule_sets(nc.jetstream())
    finally:
        await nc.drain()
    chosen = [e for _, e in history if at_ns is None or e.at_ns <= at_ns]
    return chosen[-1] if chosen else ExtractionRulesSet(rules=(), at_ns=0)


async def change(stack: Stack, edit: Any, attempts: int = 5) -> ExtractionRulesSet:
    """Read the set in force, ``edit`` its rules, publish the new set unless another
    was published meanwhile (then read again and redo the edit)."""
    import getpass

    from bus.connect import connect, ensure_streams
    from bus.history import read_rule_sets
    from bus.publisher import ConflictError, Publisher

    nc = await connect(stack.nats_url, "tidzam_ctl-rules")
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        for _ in range(attempts):
            history, _last = await read_rule_sets(js)
            last_seq = history[-1][0] if history else 0
            old = history[-1][1].rules if history else ()
            try:
                new = ExtractionRulesSet(rules=tuple(edit(old)), at_ns=time.time_ns(),
                                         by=getpass.getuser())
            except ValidationError as exc:
                raise CliError(f"bad rule set: {exc.errors()[0]['msg']}", EXIT_USAGE) from None
            try:
                await Publisher(js).publish_if_last(new, last_seq)
                return new
            except ConflictError:
                continue
        raise CliError("the rules kept changing under this command: try again")
    finally:
        await nc.drain()


async def _known_source(stack: Stack, name: str) -> None:
    """A rule for a named source needs that source (a pattern may name sources to come)."""
    import psycopg

    from projections import queries

    async with await psycopg.AsyncConnection.connect(stack.database_url) as conn:
        known = {row.name for row in await queries.sources(conn)}
    if name not in known:
        raise CliError(f"no source named {name!r} (tidzam_ctl source ls lists them); "
                       f"for sources still to come, use a pattern such as '{name}*'",
                       EXIT_USAGE)


def _print(current: ExtractionRulesSet, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps({"at_ns": current.at_ns, "by": current.by,
                                   "rules": [rule_json(r) for r in current.rules]}))
        return
    if not current.rules:
        out.print("no extraction rules: nothing is extracted "
                  "(tidzam_ctl rules set --help shows how to add one)")
        return
    table = Table(title=f"{len(current.rules)} extraction rule(s)")
    for col in ("source", "channels", "classes", "rate", "length", "context", "centred",
                "cooldown", "destination"):
        table.add_column(col)
    for r in sorted(current.rules, key=lambda r: r.key):
        table.add_row(r.source, ",".join(map(str, r.channels)) or "all", ",".join(r.classes),
                      str(r.rate), "window" if r.length_s is None else f"{r.length_s:g} s",
                      f"-{r.before_s:g} s / +{r.after_s:g} s", "yes" if r.centred else "no",
                      f"{r.cooldown_s:g} s", r.destination)
    out.print(table)
