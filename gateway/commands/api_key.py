"""`meterwatch api-key new --role R --sites S --name N`: mint an API key.

Prints the fresh random key once (it is stored nowhere) and the TOML snippet
with its SHA-256 digest to paste into the config's ``[[api.keys]]``. Bad
input (unknown role, a name or site that is not a valid id) is refused with a
message naming the option, exit status 2.
"""

from __future__ import annotations

import argparse
import re
import secrets
import sys

from gateway.api.auth import ALL_SITES, hash_key
from gateway.config import ID_PATTERN, Role

HELP = "create an API key: prints the key once and the config snippet with its SHA-256"

KEY_BYTES = 32
KEY_PREFIX = "mw_"


def new_key() -> str:
    """A fresh random key: ``mw_`` and 43 URL-safe base64 characters (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


def config_snippet(*, name: str, role: Role, sites: list[str], sha256: str) -> str:
    """The ``[[api.keys]]`` TOML table for a key."""
    site_list = ", ".join(f'"{s}"' for s in sites)
    return (
        "[[api.keys]]\n"
        f'name = "{name}"\n'
        f'role = "{role.value}"\n'
        f"sites = [{site_list}]\n"
        f'sha256 = "{sha256}"\n'
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    new = sub.add_parser("new", help="create a key", description=HELP)
    new.add_argument("--role", required=True, choices=[r.value for r in Role])
    new.add_argument(
        "--sites",
        default=ALL_SITES,
        help="comma-separated site ids the key may see, or '*' for all (default)",
    )
    new.add_argument("--name", required=True, help="who holds the key (shown in alert history)")


def main(args: argparse.Namespace) -> int:
    name: str = args.name
    if not re.match(ID_PATTERN, name):
        print(f"api-key new: --name {name!r} is not a valid id ({ID_PATTERN})", file=sys.stderr)
        return 2
    sites = [s.strip() for s in str(args.sites).split(",") if s.strip()]
    if not sites:
        print("api-key new: --sites is empty", file=sys.stderr)
        return 2
    for site in sites:
        if site != ALL_SITES and not re.match(ID_PATTERN, site):
            print(f"api-key new: --sites entry {site!r} is not a valid site id", file=sys.stderr)
            return 2
    key = new_key()
    print("API key (shown once; give it to its holder, it is not stored):")
    print(f"  {key}")
    print()
    print("Add to the config:")
    print()
    print(config_snippet(name=name, role=Role(args.role), sites=sites, sha256=hash_key(key)))
    return 0
