"""``tidzam_ctl``: the one command line of Tidzam. Thin: parses, calls, prints."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from bus_schemas.errors import TidzamError
from tidzam_ctl.commands.dataset import add_dataset_parser
from tidzam_ctl.commands.mixer import add_mixer_parser
from tidzam_ctl.commands.rules import add_rules_parser
from tidzam_ctl.commands.samples import add_samples_parser
from tidzam_ctl.commands.token import add_token_parser
from tidzam_ctl.commands.train import add_train_parser
from tidzam_ctl.settings import CtlSettings

console = Console(stderr=True, soft_wrap=True)
out = Console()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tidzam_ctl",
        description="Tidzam: listen to outdoor microphones and say what they hear. "
        "The stack lives in $TIDZAM_HOME (default ~/.local/share/tidzam); set "
        "TIDZAM_NATS_URL / TIDZAM_DATABASE_URL to use external servers.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("up", help="start NATS, PostgreSQL and the Tidzam processes")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.add_argument("--jack", action="store_true",
                   help="also run jackd with the dummy driver (same as TIDZAM_JACK=1)")
    p.add_argument("--icecast", action="store_true",
                   help="also run Icecast with every channel as a mono stream "
                   "(/<source>-out_<k>.ogg); same as TIDZAM_ICECAST=1")
    p.add_argument("--privacy", choices=("off", "mask"),
                   help="mask: speech is silenced in what is relayed (Icecast, JACK) and, "
                   "as --privacy-archive says, archived; counted by `mixer ls` (default off; "
                   "same as TIDZAM_PRIVACY; kept for later commands)")
    p.add_argument("--privacy-archive", choices=("raw", "masked", "none"),
                   help="with --privacy mask, the archive keeps speech raw, as silence "
                   "(masked, the default) or not at all (none)")
    p.add_argument("--sources", type=Path, metavar="FILE.json",
                   help='load permanent sources from a JSON file: {"sources": [{"name", '
                   '"url", "path_database", "nb_channels"}]} (the original format)')
    sub.add_parser("init", help="prepare external servers (docker-compose's `init`): the "
                   "streams at the site's limits, the migrations, and the database roles "
                   "(passwords from TIDZAM_DB_PROJECTOR_PASSWORD, TIDZAM_DB_READER_PASSWORD)")
    sub.add_parser("down", help="stop the Tidzam processes and the embedded servers")
    p = sub.add_parser("status", help="every process with its pid and state, and the URLs")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("check", help="restart whatever died (as the original `tidzam check`)")

    p = sub.add_parser("replay", help="publish recordings through the pipeline",
                       description="Decode files (wav, flac, ogg, opus, mp3, ...), resample "
                       "to the pipeline rate and publish one stream per channel. Archive "
                       "names <name>-YYYY-MM-DD-HH-MM-SS.ext give the source and start time.")
    p.add_argument("paths", nargs="+", type=Path, metavar="FILE_OR_FOLDER")
    p.add_argument("--source", help="source name (default: from the file name)")
    p.add_argument("--start", help="start time of the recording, ISO 8601 (default: the "
                   "archive name's time, else the file's modification time)")
    p.add_argument("--speed", default="max",
                   help="N times real time, or 'max' (default) for as fast as the bus takes")
    p.add_argument("--wait", action="store_true",
                   help="return once every window is classified and projected into SQL")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds to wait with --wait (default 600)")

    p = sub.add_parser("source", help="add, remove and list sources (files, URLs, archives)")
    ssub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    s = ssub.add_parser("add", help="load a source; the source manager keeps it playing",
                        description="Play a file, an HTTP/Icecast/RTSP stream or an archive "
                        "into the pipeline at real time. Permanent sources are reloaded "
                        "after a failure or an end, with backoff.")
    s.add_argument("name", help="source name (letters, digits, '_' and '-')")
    where = s.add_mutually_exclusive_group()
    where.add_argument("--url", help="http(s)://, rtsp:// or Icecast mount URL")
    where.add_argument("--file", type=Path, help="a local audio file")
    where.add_argument("--jack", metavar="PATTERN",
                       help="capture the JACK output ports matching this regular "
                       "expression (one channel each, in name order)")
    s.add_argument("--channels", help="comma-separated channel numbers, e.g. 1,4,7 "
                   "(default: all)")
    s.add_argument("--permanent", action="store_true",
                   help="reload after failures and ends, with backoff")
    s.add_argument("--database", type=Path,
                   help="archive folder of <name>-YYYY-MM-DD-HH-MM-SS.ext files")
    s.add_argument("--date", help="with --database: play the archive from this ISO time "
                   "on, then the live --url; 'now' or a future date means live at once")
    s.add_argument("--format", choices=("ogg", "copy"), default="ogg",
                   help="Icecast relay format (copy: relay untouched)")
    s = ssub.add_parser("rm", help="stop a source and forget it")
    s.add_argument("name")
    s = ssub.add_parser("ls", help="sources with state, channels, since, last error, "
                        "reconnects and chunks/s")
    s.add_argument("--all", action="store_true", help="include removed sources")
    s.add_argument("--json", action="store_true")
    s = ssub.add_parser("archive-ls", help="time ranges covered by a source's archive folder")
    s.add_argument("name")
    s.add_argument("--database", type=Path, help="the folder (default: the source's own)")
    s.add_argument("--json", action="store_true")

    p = sub.add_parser("query", help="read the projections")
    qsub = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    q = qsub.add_parser("detections", help="detections (one per window and label), "
                        "oldest first")
    _add_query_arguments(q, events=False)
    q = qsub.add_parser("events", help="detection events: runs of windows with one label, "
                        "oldest first", description="Runs of windows of one source, channel "
                        "and model with one decided label, merged into events; --since and "
                        "--until select the events that overlap that time.")
    _add_query_arguments(q, events=True)

    p = sub.add_parser("projections", help="maintain the SQL read models")
    psub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    psub.add_parser("rebuild", help="truncate the projections and replay every event")

    p = sub.add_parser("psql", help="open psql on the projections database",
                       description="Run psql (or print the connection URL, password "
                       "included, with --url) for the stack's PostgreSQL.")
    p.add_argument("--url", action="store_true", help="print the URL instead of running psql")
    p.add_argument("--reader", action="store_true",
                   help="as the read-only role tidzam_reader (for Grafana, reports): it can "
                   "SELECT and nothing else")
    p.add_argument("psql_args", nargs=argparse.REMAINDER, help="passed on to psql")

    p = sub.add_parser("backup", help="save the database, CONTROL, models and samples",
                       description="Write what the bus cannot rebuild into DIR (a new folder): "
                       "the projections database (pg_dump), every CONTROL message (sources, "
                       "rules, deploys, reviews), the model registry and the extracted "
                       "samples, with the sha256 of every file. Audio stays on the bus and "
                       "in the archive files.")
    p.add_argument("dir", type=Path, help="a new or empty folder")
    p = sub.add_parser("restore", help="bring a backup back into a fresh home",
                       description="Restore DIR (from `tidzam_ctl backup`) into this home, "
                       "whose stack must be up and fresh (an empty CONTROL stream): the "
                       "files are checked against their sha256 first.")
    p.add_argument("dir", type=Path, help="the backup folder")

    p = sub.add_parser("retention", help="remove what is older than the site keeps",
                       description="Remove the database's predictions, detections, events "
                       "and channel health older than TIDZAM_RETAIN_PREDICTIONS_DAYS, the "
                       "audio of samples nobody reviewed older than "
                       "TIDZAM_RETAIN_SAMPLES_DAYS, and archive files older than "
                       "TIDZAM_RETAIN_ARCHIVE_DAYS (0, the default: keep forever). The AUDIO "
                       "and EVENTS streams keep TIDZAM_RETAIN_AUDIO_H / _AUDIO_GB / "
                       "_EVENTS_DAYS themselves. `check` runs this too.")
    p.add_argument("--now", metavar="TIME", help="act as if it were this ISO time")

    p = sub.add_parser("model", help="the model registry: add, list, show, deploy, roll back",
                       description="Model folders live in $TIDZAM_HOME/models/<id>/<version> "
                       "(plus the built-in models/ of Tidzam). A deploy publishes a "
                       "ModelDeployed event; running classifiers switch at their next batch, "
                       "without a restart and without losing a window.")
    msub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    m = msub.add_parser("add", help="copy a trained model folder into the registry",
                        description="Validate a model folder (model.tflite, model.json, "
                        "corpus.json; one test inference) and copy it in as "
                        "<model_id>/<version>. The same id@version with other content is "
                        "refused: give a retrained model a new version.")
    m.add_argument("folder", type=Path, metavar="FOLDER")
    m = msub.add_parser("ls", help="every id@version with its metrics and which is deployed")
    m.add_argument("name", nargs="?", metavar="NAME", help="only this model")
    m.add_argument("--json", action="store_true", help="one JSON array")
    m = msub.add_parser("show", help="metadata, per-class precision/recall/F1, training "
                        "data and feature parameters of a version")
    m.add_argument("spec", metavar="NAME[@VERSION]", help="default version: the newest")
    m.add_argument("--json", action="store_true", help="the model.json and the deploy state")
    m = msub.add_parser("deploy", help="make a version the one classifiers use",
                        description="Validate the folder, then publish ModelDeployed on the "
                        "CONTROL stream; running classifiers switch at their next batch.")
    m.add_argument("spec", metavar="NAME[@VERSION]",
                   help="default version: the newest (semantic version order)")
    m.add_argument("--new-windowing", action="store_true",
                   help="deploy a model whose window length or rate differs from the deployed "
                   "one (running classifiers keep the old model until restarted)")
    m = msub.add_parser("rollback", help="re-deploy the version deployed before the current one",
                        description="A second rollback returns to the version the first one "
                        "left (as `kubectl rollout undo`).")
    m.add_argument("name", metavar="NAME")
    m.add_argument("--new-windowing", action="store_true", help="as for deploy")
    m = msub.add_parser(
        "compare", help="replay archived audio through two models; report disagreements",
        description="Decode the archive files (TIDZAM_ARCHIVE_DIR/<source>/ or --database) "
        "overlapping [--since, --until), cut the live classifier's windows, score them with "
        "A and B (each with its own decision rule) and report agreement per source and "
        "class and the longest disagreements. Publishes nothing, writes no SQL. A as NAME "
        "means the deployed version (asks the bus); NAME@VERSION needs no running stack. "
        "Exit 3 when some files could not be read.")
    m.add_argument("a", metavar="A", help="reference: NAME (deployed version) or NAME@VERSION")
    m.add_argument("b", metavar="B", help="candidate: NAME (newest version) or NAME@VERSION")
    m.add_argument("--since", required=True, help="ISO time or an age like 2h, 3d")
    m.add_argument("--until", help="ISO time or an age (default: now)")
    m.add_argument("--source", action="append", metavar="S", help="only this source "
                   "(repeat for several; default: every source)")
    m.add_argument("--database", action="append", type=Path, metavar="DIR",
                   help="an archive folder to read instead of TIDZAM_ARCHIVE_DIR (repeatable)")
    m.add_argument("--overlap", type=float, help="window overlap (default: TIDZAM_OVERLAP, "
                   "as the live classifiers)")
    m.add_argument("--top", type=int, default=20, help="disagreement ranges to list (20)")
    m.add_argument("--threads", type=int, default=1, help="LiteRT threads per model (1)")
    m.add_argument("--json", action="store_true", help="one JSON object")

    add_dataset_parser(sub)
    add_train_parser(sub)
    add_rules_parser(sub)
    add_samples_parser(sub)
    add_mixer_parser(sub)
    add_token_parser(sub)

    p = sub.add_parser("demo", help="the main job: start the stack, replay real recordings "
                       "that the model never saw, print the detections from SQL")
    p.add_argument("--keep", action="store_true", help="leave the stack running (default)")
    p.add_argument("--down", action="store_true", help="stop the stack afterwards")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = CtlSettings()
        handler = COMMANDS[args.command]
        code = handler(settings, args)
    except TidzamError as exc:  # a boundary's message says what to do: no traceback
        console.print(f"[red]error:[/red] {exc}")
        sys.exit(exc.exit_code)
    except ValidationError as exc:  # a bad TIDZAM_* setting
        console.print(f"[red]error:[/red] {exc}")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # a bug: the traceback is for -v
        if args.verbose:
            raise
        console.print(f"[red]error:[/red] unexpected {type(exc).__name__}: "
                      f"{escape(str(exc))} (run with -v for the traceback)")
        sys.exit(1)
    sys.exit(code)


def _add_query_arguments(parser: argparse.ArgumentParser, *, events: bool) -> None:
    """The filters and output options of ``query detections`` and ``query events``."""
    parser.add_argument("--source")
    parser.add_argument("--channel", type=int)
    parser.add_argument("--label")
    parser.add_argument("--since", help="ISO time or an age like 2h, 3d")
    parser.add_argument("--until", help="ISO time or an age like 2h, 3d")
    if events:
        parser.add_argument("--min-windows", type=int, metavar="N",
                            help="only events of at least N windows")
    parser.add_argument("--limit", type=int, default=1000, metavar="N",
                        help="show at most N rows (default 1000)")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table",
                        help="table (default), csv or json; with csv and json the row "
                        "count goes to stderr")
    parser.add_argument("--json", dest="format", action="store_const", const="json",
                        help="same as --format json")


def _commands() -> dict[str, Callable[[CtlSettings, argparse.Namespace], int]]:
    from tidzam_ctl.commands import stack as commands
    from tidzam_ctl.commands.backup import backup, restore
    from tidzam_ctl.commands.dataset import dataset
    from tidzam_ctl.commands.mixer import mixer
    from tidzam_ctl.commands.model import model
    from tidzam_ctl.commands.query import query
    from tidzam_ctl.commands.replay import replay
    from tidzam_ctl.commands.retention import retention
    from tidzam_ctl.commands.rules import rules
    from tidzam_ctl.commands.samples import samples
    from tidzam_ctl.commands.token import token
    from tidzam_ctl.commands.train import train

    return {
        "up": commands.up,
        "init": commands.init,
        "down": commands.down,
        "status": commands.status,
        "check": commands.check,
        "replay": replay,
        "query": query,
        "projections": commands.projections,
        "demo": commands.demo,
        "psql": commands.psql,
        "backup": backup,
        "retention": retention,
        "restore": restore,
        "source": commands.source,
        "model": model,
        "dataset": dataset,
        "train": train,
        "rules": rules,
        "samples": samples,
        "mixer": mixer,
        "token": token,
    }


class _Lazy(dict[str, Callable[[CtlSettings, argparse.Namespace], int]]):
    def __missing__(self, key: str) -> Callable[[CtlSettings, argparse.Namespace], int]:
        self.update(_commands())
        return self[key]


COMMANDS = _Lazy()

if __name__ == "__main__":
    main()
