"""Gatehouse as it was at an earlier git revision, to run beside the current code in one bench.

``source_tree(rev)`` extracts the ``gatehouse`` package of that revision (``git archive``) into a
temporary folder and removes it again when the bench ends, also on Ctrl-C or SIGTERM (the benches
turn SIGTERM into KeyboardInterrupt). A server started with that folder as its working directory
and ``PYTHONPATH`` (``harness.gatehouse(source=...)``) imports the old package instead of the
current one; ``package_path`` asks the same interpreter, under the same environment, which
package it imports, so a bench can show it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

#: The repository the bench belongs to: revisions are looked up there.
REPOSITORY = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Revision:
    name: str  # as given, e.g. "main~5"
    commit: str  # the full hash
    folder: Path  # holds the revision's gatehouse/ package

    @property
    def label(self) -> str:
        return f"gatehouse@{self.name}"


def resolve(rev: str, repository: Path = REPOSITORY) -> str:
    """The commit ``rev`` names (any git revision), or SystemExit if it names none."""
    done = subprocess.run(["git", "-C", str(repository), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"--baseline: {rev!r} is not a commit of {repository}")
    return done.stdout.strip()


@contextmanager
def source_tree(rev: str, repository: Path = REPOSITORY) -> Iterator[Revision]:
    """The ``gatehouse`` package at ``rev``, in a temporary folder removed on exit."""
    commit = resolve(rev, repository)
    folder = Path(tempfile.mkdtemp(prefix="gatehouse-baseline-"))
    try:
        archive = subprocess.Popen(["git", "-C", str(repository), "archive", "--format=tar", commit, "gatehouse"],
                                   stdout=subprocess.PIPE)
        assert archive.stdout is not None
        extract = subprocess.run(["tar", "-x", "-C", str(folder)], stdin=archive.stdout, check=False)
        archive.stdout.close()
        if archive.wait() != 0 or extract.returncode != 0 or not (folder / "gatehouse" / "__init__.py").is_file():
            raise RuntimeError(f"could not extract gatehouse/ at {commit} from {repository}")
        yield Revision(rev, commit, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def package_path(env: dict[str, str], cwd: Path | None = None) -> str:
    """The ``gatehouse/__init__.py`` that ``python -m gatehouse`` imports with this environment and folder."""
    return subprocess.run([sys.executable, "-c", "import gatehouse; print(gatehouse.__file__)"], env=env,
                          cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


__all__ = ["REPOSITORY", "Revision", "package_path", "resolve", "source_tree"]
