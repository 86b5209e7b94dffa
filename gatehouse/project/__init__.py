"""A project folder a user commits: ``gatehouse init`` writes it, ``gatehouse migrate new`` adds to it.

The files come from ``templates/`` (package data), stored without their leading dot so that they
neither act as this repository's own ``.gitignore`` nor get left out of the wheel. Every file is
written whole (a temporary file renamed into place) or not at all, and nothing a user already
has is overwritten unless they ask.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

__all__ = ["EXAMPLE_MIGRATION", "FILES", "MIGRATION_NAME", "ProjectError", "Written", "init", "new_migration",
           "next_number", "slug"]

EXAMPLE_MIGRATION = "migrations/0001_example.sql"

#: What ``init`` writes: the path in the project, the template it comes from, and what it is for.
FILES: tuple[tuple[str, str, str], ...] = (
    (EXAMPLE_MIGRATION, "0001_example.sql", "an example table with row-level security: read it, then change it"),
    (".env.example", "env.example", "the settings a deployment sets: copy it to .env"),
    (".gitignore", "gitignore", "keeps the data folder (.gatehouse/), .env and keys out of git"),
)

#: A numbered migration: the number, then ``_`` and the rest of the name.
MIGRATION_NAME = re.compile(r"^(\d+)_.*\.sql$")
_MAX_SLUG = 60


class ProjectError(Exception):
    """The folder cannot take what was asked; the message says why and what to do."""


@dataclass(frozen=True)
class Written:
    path: Path
    about: str


def _template(name: str) -> str:
    return (resources.files("gatehouse.project") / "templates" / name).read_text(encoding="utf-8")


def _write_whole(path: Path, text: str, *, replace: bool) -> None:
    """Write ``path`` in one step: a reader sees the old file or the whole new one. Without
    ``replace``, a file that appeared meanwhile is kept and ProjectError raised."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, 0o644)
        if replace:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)  # fails if the name is taken: never overwrites
            except FileExistsError:
                raise ProjectError(f"{path} already exists; it was left as it is") from None
            except OSError:  # a file system without hard links: create the name exclusively instead
                try:
                    with path.open("x", encoding="utf-8") as file:
                        file.write(text)
                except FileExistsError:
                    raise ProjectError(f"{path} already exists; it was left as it is") from None
    finally:
        Path(temporary).unlink(missing_ok=True)


def init(folder: Path, *, force: bool = False) -> list[Written]:
    """Write the project files into ``folder`` (made if missing). Refuses, writing nothing, when
    any of them exists, unless ``force``. The example migration is left out of a migrations
    folder that already holds other migrations: it would be applied to their database."""
    if folder.exists() and not folder.is_dir():
        raise ProjectError(f"{folder} is a file, not a folder")
    existing = [path for path, _, _ in FILES if (folder / path).exists()]
    if existing and not force:
        raise ProjectError(f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''} in {folder}; "
                           "nothing was written (--force overwrites them)")
    migrations = folder / "migrations"
    others = sorted(p.name for p in migrations.glob("*.sql") if p.name != Path(EXAMPLE_MIGRATION).name) \
        if migrations.is_dir() else []
    written = []
    for path, template, about in FILES:
        if path == EXAMPLE_MIGRATION and others:
            continue
        _write_whole(folder / path, _template(template), replace=force)
        written.append(Written(folder / path, about))
    return written


def slug(name: str) -> str:
    """``name`` as a file name part: lower case, runs of anything but a-z and 0-9 as one ``_``."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")[:_MAX_SLUG].rstrip("_")


def next_number(folder: Path) -> int:
    """One more than the highest numbered migration in ``folder`` (1 for none); other files are ignored."""
    numbers = [int(match[1]) for path in folder.iterdir()
               if path.is_file() and (match := MIGRATION_NAME.match(path.name))] if folder.is_dir() else []
    return max(numbers, default=0) + 1


def new_migration(folder: Path, name: str) -> Path:
    """Create ``folder/NNNN_name.sql`` (the next number, zero-padded to 4) with a header comment."""
    part = slug(name)
    if not part:
        raise ProjectError(f"{name!r} has no letters or digits to name a migration with, e.g. add_todos")
    if folder.exists() and not folder.is_dir():
        raise ProjectError(f"{folder} is a file, not a migrations folder")
    path = folder / f"{next_number(folder):04d}_{part}.sql"
    header = (f"-- {path.stem}: applied once, after the migrations before it, by `gatehouse migrate` and at\n"
              "-- `gatehouse serve`, in one transaction. Once applied, leave it as it is: change the schema\n"
              "-- with a new file. New tables: enable row-level security, add policies, grant to the roles.\n\n")
    _write_whole(path, header, replace=False)
    return path
