"""The auth service: every auth flow, built once over shared parts.

Handlers reach a flow through it (``auth.login.password(...)``, ``auth.account.current_user(...)``);
the flows themselves live in ``auth.flows``.
"""

from __future__ import annotations

from gatehouse.auth.flows.account import AccountFlow
from gatehouse.auth.flows.base import Client, Deps
from gatehouse.auth.flows.login import LoginFlow
from gatehouse.auth.flows.recover import RecoveryFlow
from gatehouse.auth.flows.signup import SignUpFlow
from gatehouse.auth.flows.verify import VerifyFlow
from gatehouse.auth.mfa.flow import MFAFlow
from gatehouse.auth.mfa.passkeys import PasskeyFlow
from gatehouse.auth.oauth.flow import OAuthFlow
from gatehouse.core.config import Settings
from gatehouse.core.db import Database
from gatehouse.core.keys import KeySet
from gatehouse.mail.render import Templates

__all__ = ["AuthService", "Client"]


class AuthService:
    """The flows: ``signup``, ``login``, ``verification``, ``recovery``, ``account``, ``oauth``, ``mfa``, ``passkeys``."""

    def __init__(self, database: Database, settings: Settings, keys: KeySet, templates: Templates) -> None:
        self.deps = Deps.build(database, settings, keys, templates)
        self.settings = settings
        self.devices = self.deps.devices
        self.redirects = self.deps.redirects
        self.signup = SignUpFlow(self.deps)
        self.login = LoginFlow(self.deps)
        self.verification = VerifyFlow(self.deps)
        self.recovery = RecoveryFlow(self.deps)
        self.account = AccountFlow(self.deps)
        self.oauth = OAuthFlow(self.deps)
        self.mfa = MFAFlow(self.deps)
        self.passkeys = PasskeyFlow(self.deps)

    def close(self) -> None:
        """Stop the password hasher's thread pool (at shutdown)."""
        self.deps.hasher.close()
