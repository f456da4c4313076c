"""``tidzam_ctl token create | ls | revoke``: who may use the gateway.

Tokens live in ``$TIDZAM_HOME/gateway/tokens.json`` (only their SHA-256; mode 0600); a
running gateway sees a change at the next request. ``control`` tokens may load and
unload sources, set rules and everything ``read`` tokens may: live data and history
(public unless ``TIDZAM_GATEWAY_PUBLIC_READ=false``).
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from projections.gateway.auth import ROLES, TokenError, TokenStore, tokens_path
from tidzam_ctl.errors import EXIT_OK, EXIT_USAGE, CliError
from tidzam_ctl.settings import CtlSettings

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def add_token_parser(sub: Any) -> None:
    p = sub.add_parser("token", help="the gateway's access tokens: create, ls, revoke",
                       description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    tsub = p.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    t = tsub.add_parser("create", help="make a token (printed once, never stored in clear)")
    t.add_argument("name", help="who or what uses it (letters, digits, '-', '_')")
    t.add_argument("--role", choices=ROLES, default="read",
                   help="read (live data, history) or control (also sources, rules); "
                   "default read")
    t = tsub.add_parser("ls", help="every token: name, role, created, revoked")
    t.add_argument("--json", action="store_true", help="one JSON array")
    t = tsub.add_parser("revoke", help="a revoked token is refused at its next request")
    t.add_argument("name")


def token(settings: CtlSettings, args: argparse.Namespace) -> int:
    store = TokenStore(tokens_path(settings.home.expanduser()))
    try:
        if args.token_command == "create":
            secret = store.create(args.name, args.role)
            console.print(f"token {args.name} ({args.role}), shown once:")
            out.print(secret, highlight=False)
            return EXIT_OK
        if args.token_command == "revoke":
            store.revoke(args.name)
            console.print(f"revoked {args.name}")
            return EXIT_OK
    except TokenError as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    rows: list[dict[str, Any]] = [{"name": e.name, "role": e.role, "revoked": e.revoked,
             "created": datetime.fromtimestamp(e.created_at, UTC).isoformat(timespec="seconds")}
            for e in store.entries()]
    if args.json:
        out.print_json(json.dumps(rows))
        return EXIT_OK
    table = Table("name", "role", "created", "revoked")
    for r in rows:
        table.add_row(str(r["name"]), str(r["role"]), str(r["created"]),
                      "yes" if r["revoked"] else "")
    out.print(table)
    return EXIT_OK
