"""Signing key, API keys and the one JWT verifier.

On first start the keys are generated into ``DATA_DIR/keys.json`` (mode 0600); each value can
instead come from its ``GATEHOUSE_*`` variable, so that several processes on several machines
share them. Access tokens are ES256 only: the verifier's algorithm allow-list has one entry,
so neither ``none`` nor an HS256 token "signed" with the public key can pass.

The configured key is the root: every derived secret (``derive``) comes from it, always. What
signs and what is published is the key set's :class:`Ring`: at first the root alone; after a
rotation (``core/keyring.py`` keeps the ring in PostgreSQL and swaps it in) another key signs
while the keys that signed tokens still valid stay published and accepted by their ``kid``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from jwt.utils import base64url_decode

from gatehouse.core.config import ConfigError, Settings

ALGORITHM = "ES256"
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


def _b64url_bytes(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


LEGACY_KEY_LIFETIME = 10 * 365 * 24 * 3600
API_KEY_ROLES = ("anon", "service_role")


class InvalidToken(Exception):
    """A JWT failed verification; the message says why (expired, bad signature, ...)."""


def _b64url(data: bytes) -> str:
    return _b64url_bytes(data).decode("ascii")


def _public_jwk(public_key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    numbers = public_key.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64url(numbers.x.to_bytes(32, "big")),
        "y": _b64url(numbers.y.to_bytes(32, "big")),
    }


def _thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638 thumbprint: a stable key id derived from the public key alone."""
    canonical = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode()).digest())


@dataclass(frozen=True)
class SigningKey:
    """One ES256 key of the ring: its id, its public key as a JWK and, when this process may
    sign with it, its private key (a key that is only verified needs none)."""

    kid: str
    public_key: ec.EllipticCurvePublicKey
    private_key: ec.EllipticCurvePrivateKey | None
    public_jwk: dict[str, Any] = field(compare=False)
    #: The encoded JOSE header of every token this key signs.
    jws_header: bytes = field(repr=False, compare=False)

    @classmethod
    def of(cls, private_key: ec.EllipticCurvePrivateKey) -> SigningKey:
        return cls.public(private_key.public_key(), private_key)

    @classmethod
    def public(cls, public_key: ec.EllipticCurvePublicKey,
               private_key: ec.EllipticCurvePrivateKey | None = None) -> SigningKey:
        jwk = _public_jwk(public_key)
        kid = _thumbprint(jwk)
        header = _b64url_bytes(orjson.dumps({"alg": ALGORITHM, "kid": kid, "typ": "JWT"}))
        return cls(kid, public_key, private_key,
                   {**jwk, "kid": kid, "alg": ALGORITHM, "use": "sig", "key_ops": ["verify"]}, header)

    def sign(self, claims: dict[str, Any]) -> str:
        """A compact ES256 JWS of ``claims`` (JSON values only), with this key's ``kid``.

        Written here rather than through ``jwt.encode``: on every log-in and refresh, PyJWT's
        generic path (the standard library's JSON encoder, header merging, claim checks) costs
        as much again as the signature itself. The output is what PyJWT would make, up to JSON
        spacing and escapes; ``tests/core/test_keys.py`` verifies it with PyJWT.
        """
        if self.private_key is None:
            raise RuntimeError(f"the key {self.kid} is published only; this process cannot sign with it")
        signing_input = self.jws_header + b"." + _b64url_bytes(orjson.dumps(claims))
        r, s = decode_dss_signature(self.private_key.sign(signing_input, _ECDSA_SHA256))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return (signing_input + b"." + _b64url_bytes(signature)).decode()


@dataclass(frozen=True, eq=False)
class Ring:
    """Which key signs and which are published (in the JWKS, accepted by ``kid``): the current
    one always is; a standby key before it signs, a previous one while its tokens may be valid."""

    current: SigningKey
    published: dict[str, SigningKey]
    root_kid: str

    def __post_init__(self) -> None:
        if self.current.private_key is None or self.published.get(self.current.kid) is not self.current:
            raise ValueError("the current key must be published and able to sign")


class _RingHolder:
    """The key set's one mutable part: the ring in force, replaced whole (never edited)."""

    def __init__(self, ring: Ring) -> None:
        self.ring = ring


@dataclass(frozen=True)
class KeySet:
    private_key: ec.EllipticCurvePrivateKey
    publishable_key: str
    secret_key: str
    anon_key: str
    service_role_key: str
    authenticator_password: str
    #: The root key: its id and public JWK (what signs now is ``ring.current``).
    root: SigningKey = field(init=False, repr=False, compare=False)
    kid: str = field(init=False)
    public_jwk: dict[str, Any] = field(init=False)
    _holder: _RingHolder = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        root = SigningKey.of(self.private_key)
        object.__setattr__(self, "root", root)
        object.__setattr__(self, "kid", root.kid)
        object.__setattr__(self, "public_jwk", root.public_jwk)
        object.__setattr__(self, "_holder", _RingHolder(Ring(root, {root.kid: root}, root.kid)))

    @property
    def ring(self) -> Ring:
        return self._holder.ring

    def use_ring(self, ring: Ring) -> None:
        """Sign and verify by ``ring`` from now on (the keyring's reload, in every process)."""
        if ring.root_kid != self.kid:
            raise ValueError("a ring made under another root key")
        self._holder.ring = ring

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The published keys, the signing one first."""
        ring = self.ring
        return {"keys": [dict(ring.current.public_jwk)]
                + [dict(key.public_jwk) for kid, key in ring.published.items() if kid != ring.current.kid]}

    def derive(self, purpose: bytes) -> bytes:
        """A 32-byte key for one purpose, derived from the signing key (HMAC-SHA256 of its DER):
        every process holding the signing key derives the same, and none is stored anywhere."""
        material = self.private_key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return hmac.new(material, purpose, hashlib.sha256).digest()

    def sign(self, claims: dict[str, Any]) -> str:
        """``claims`` signed by the ring's current key (``SigningKey.sign``)."""
        return self.ring.current.sign(claims)

    def role_for_api_key(self, key: str) -> str | None:
        """The base role an ``sb_`` API key grants, compared in constant time; None if unknown."""
        if hmac.compare_digest(key.encode(), self.publishable_key.encode()):
            return "anon"
        if hmac.compare_digest(key.encode(), self.secret_key.encode()):
            return "service_role"
        return None


class JWTVerifier:
    """Checks signature, algorithm, ``exp`` and, when present, ``aud`` and ``kid``.

    The key is the published key the header's ``kid`` names (any other ``kid`` is refused). A
    token without a ``kid`` (one minted by hand, such as a legacy API key made with another tool)
    is checked against the current key, then the root key while the root is still published:
    never against a retired key, and never more than two signature checks.

    A client sends the same access token with every request for up to an hour, so tokens that
    passed are remembered and a repeat costs a hash, a dict look-up, an ``exp`` check and a JSON
    parse instead of an ECDSA verification (about 0.3 ms). The memory is bounded: at most
    ``cache_size`` tokens (``GATEHOUSE_JWT_CACHE_SIZE``; 0 remembers none), least recently used
    first out, each kept as its SHA-256, the ``kid`` that verified it and its claims as the JSON they were signed as: about 0.9 KB for a
    Supabase-style access token, so 3.5 MB for the default 4,096. Only a token whose SHA-256 is
    that of a token that verified is served from it; a remembered token still expires on time, and
    is forgotten once its key is no longer published (retired).
    """

    def __init__(
        self,
        keys: KeySet,
        audiences: frozenset[str] = frozenset({"authenticated"}),
        leeway: int = 0,
        cache_size: int = 4096,
    ) -> None:
        self._keys = keys
        self._audiences = audiences
        self._leeway = leeway
        self._cache: OrderedDict[bytes, tuple[float, str, bytes]] = OrderedDict()
        self._cache_size = cache_size

    def verify(self, token: str) -> dict[str, Any]:
        key = hashlib.sha256(token.encode()).digest()
        hit = self._cache.get(key)
        if hit is not None:
            expires, kid, claims = hit
            if time.time() < expires + self._leeway and kid in self._keys.ring.published:
                self._cache.move_to_end(key)
                return orjson.loads(claims)  # type: ignore[no-any-return]
            del self._cache[key]
        verified, kid = self._verify(token)
        if self._cache_size > 0:
            # The claims as signed: the payload segment PyJWT decoded, exactly its size (orjson.dumps
            # would keep a 4 KB buffer per entry). Kept only if orjson reads it as PyJWT did.
            payload = base64url_decode(token.rsplit(".", 1)[0].split(".", 1)[1])
            try:
                if orjson.loads(payload) != verified:
                    return verified
            except orjson.JSONDecodeError:
                return verified
            self._cache[key] = (float(verified["exp"]), kid, payload)
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return verified

    def _candidates(self, header: dict[str, Any]) -> list[SigningKey]:
        ring = self._keys.ring
        if "kid" not in header:
            root = ring.published.get(ring.root_kid)
            return [ring.current] + ([root] if root is not None and root is not ring.current else [])
        found = ring.published.get(header["kid"]) if isinstance(header["kid"], str) else None
        if found is None:
            raise InvalidToken("token was signed by an unknown key")
        return [found]

    def _verify(self, token: str) -> tuple[dict[str, Any], str]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(f"malformed token: {exc}") from None
        if header.get("alg") != ALGORITHM:
            raise InvalidToken(f"signing method {header.get('alg')!r} is not allowed")
        candidates = self._candidates(header)
        for signing_key in candidates:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    signing_key.public_key,
                    algorithms=[ALGORITHM],
                    options={"require": ["exp"], "verify_aud": False},
                    leeway=self._leeway,
                )
                break
            except jwt.InvalidSignatureError:
                if signing_key is candidates[-1]:
                    raise InvalidToken("invalid token: Signature verification failed") from None
            except jwt.ExpiredSignatureError:
                raise InvalidToken("token is expired") from None
            except jwt.InvalidTokenError as exc:
                raise InvalidToken(f"invalid token: {exc}") from None
        aud = claims.get("aud")
        if aud is not None:
            given = {aud} if isinstance(aud, str) else set(aud) if isinstance(aud, list) else set()
            if not given & self._audiences:
                raise InvalidToken("token audience is not accepted")
        role = claims.get("role")
        if role is not None and not isinstance(role, str):
            raise InvalidToken("token role claim must be a string")
        return claims, signing_key.kid


def _legacy_key(private_key: ec.EllipticCurvePrivateKey, role: str) -> str:
    now = int(time.time())
    claims = {"iss": "gatehouse", "role": role, "iat": now, "exp": now + LEGACY_KEY_LIFETIME}
    kid = _thumbprint(_public_jwk(private_key.public_key()))
    return jwt.encode(claims, private_key, algorithm=ALGORITHM, headers={"kid": kid})


def _generate() -> dict[str, str]:
    private_key = ec.generate_private_key(ec.SECP256R1())
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "jwt_private_key": pem,
        "publishable_key": "sb_publishable_" + secrets.token_urlsafe(24),
        "secret_key": "sb_secret_" + secrets.token_urlsafe(24),
        "anon_key": _legacy_key(private_key, "anon"),
        "service_role_key": _legacy_key(private_key, "service_role"),
        "authenticator_password": secrets.token_urlsafe(32),
    }


def _read_or_create(path: Path) -> dict[str, str]:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".keys.{secrets.token_hex(8)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(_generate(), handle, indent=2)
        try:
            os.link(tmp, path)  # atomic; if another process won the race, we read its keys
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the keys file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"the keys file {path} is damaged: expected a JSON object")
    return data


def load_keys(settings: Settings) -> KeySet:
    """Keys from the environment where given, else from (a new) ``DATA_DIR/keys.json``."""
    from_env = {
        "jwt_private_key": settings.jwt_private_key,
        "publishable_key": settings.publishable_key,
        "secret_key": settings.secret_key,
        "anon_key": settings.anon_key,
        "service_role_key": settings.service_role_key,
        "authenticator_password": settings.authenticator_password,
    }
    stored: dict[str, str] = {}
    derivable = ("anon_key", "service_role_key")
    if any(value is None for name, value in from_env.items() if name not in derivable):
        stored = _read_or_create(settings.data_dir.expanduser().resolve() / "keys.json")
    if settings.jwt_private_key is not None:
        # Stored legacy JWTs were signed by the stored key, not by the one given: mint new ones.
        stored = {name: value for name, value in stored.items() if name not in derivable}
    values = {name: env if env is not None else stored.get(name) for name, env in from_env.items()}

    pem = values["jwt_private_key"]
    if not pem:
        raise ConfigError("no JWT signing key: set GATEHOUSE_JWT_PRIVATE_KEY or remove the damaged keys.json")
    try:
        private_key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"GATEHOUSE_JWT_PRIVATE_KEY is not a usable PEM private key: {exc}") from None
    if not isinstance(private_key, ec.EllipticCurvePrivateKey) or private_key.curve.name != "secp256r1":
        raise ConfigError("GATEHOUSE_JWT_PRIVATE_KEY must be an EC P-256 key (for ES256)")

    for name, prefix in (("publishable_key", "sb_publishable_"), ("secret_key", "sb_secret_")):
        value = values[name]
        if not value or not value.startswith(prefix) or len(value) < len(prefix) + 16:
            raise ConfigError(f"GATEHOUSE_{name.upper()} must start with {prefix} followed by at least 16 characters")
    if values["publishable_key"] == values["secret_key"]:
        raise ConfigError("the publishable and secret keys must differ")
    password = values["authenticator_password"]
    if not password or len(password) < 16:
        raise ConfigError("GATEHOUSE_AUTHENTICATOR_PASSWORD must be at least 16 characters")

    return KeySet(
        private_key=private_key,
        publishable_key=values["publishable_key"],  # type: ignore[arg-type]
        secret_key=values["secret_key"],  # type: ignore[arg-type]
        anon_key=values["anon_key"] or _legacy_key(private_key, "anon"),
        service_role_key=values["service_role_key"] or _legacy_key(private_key, "service_role"),
        authenticator_password=password,
    )
