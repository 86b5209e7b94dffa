"""``gatehouse s3-keys create|list|delete``: the access keys of the S3 protocol (``s3.keys``)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable

import asyncpg

from gatehouse.core.config import Settings
from gatehouse.core.keys import KeySet
from gatehouse.storage.s3.keys import S3Keys


def add_parser(commands: argparse._SubParsersAction,  # type: ignore[type-arg]
               data_dir_option: Callable[[argparse.ArgumentParser], None]) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        "s3-keys", help="issue, list and delete S3 access keys for /storage/v1/s3",
        description="S3 access keys sign requests to the S3 protocol at /storage/v1/s3 with AWS Signature V4. "
        "A key acts as the service role (full access, RLS bypassed): keep it on servers. The secret is shown "
        "once, when the key is created.",
    )
    data_dir_option(parser)
    actions = parser.add_subparsers(dest="s3_keys_command", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="issue a new key and print its access key id and secret")
    create.add_argument("--description", default="", help="a note saying what the key is for (at most 200 characters)")
    create.add_argument("--env", action="store_true", help="print AWS_ACCESS_KEY_ID=... lines, ready for a .env file")
    actions.add_parser("list", help="list the keys (never their secrets)")
    delete = actions.add_parser("delete", help="delete a key: requests signed with it are refused at once")
    delete.add_argument("access_key_id", help="the key's access key id")
    return parser


def run(args: argparse.Namespace, url: str, keys: KeySet, settings: Settings) -> int:
    return asyncio.run(_run(args, url, keys))


async def _run(args: argparse.Namespace, url: str, keys: KeySet) -> int:
    conn = await asyncpg.connect(url)
    try:
        store = S3Keys(keys)
        if args.s3_keys_command == "create":
            if len(args.description) > 200:
                raise SystemExit("gatehouse: error: the description is longer than 200 characters")
            access_key_id, secret = await store.create(conn, args.description)
            if args.env:
                print(f"AWS_ACCESS_KEY_ID={access_key_id}\nAWS_SECRET_ACCESS_KEY={secret}")
            else:
                print(f"access key id      {access_key_id}\nsecret access key  {secret}")
            return 0
        if args.s3_keys_command == "list":
            print(f"{'access key id':32}  {'created':19}  {'last used':19}  description")
            for key in await store.list(conn):
                used = key.last_used_at.isoformat()[:19] if key.last_used_at else "never"
                print(f"{key.access_key_id:32}  {key.created_at.isoformat()[:19]:19}  {used:19}  {key.description}")
            return 0
        if not await store.delete(conn, args.access_key_id):
            print(f"gatehouse: error: no S3 access key {args.access_key_id}")
            return 1
        print(f"deleted {args.access_key_id}")
        return 0
    finally:
        await conn.close()
