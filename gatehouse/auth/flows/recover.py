"""Recovery: a password-reset email, sent with the same answer and work for every address."""

from __future__ import annotations

from gatehouse.auth.flows.base import Client, Flow, pkce
from gatehouse.auth.forms import RecoverForm


class RecoveryFlow(Flow):
    async def recover(self, form: RecoverForm, client: Client, redirect_to: str | None) -> None:
        """Send a password-reset email; the same answer, and the same work, whether or not the
        address has an account.

        The email is rendered and one statement (``links.send_if_found``) is sent either way, so
        the time taken does not tell either. An address nobody confirmed gets nothing: its
        pending password may be a stranger's, and a reset link would confirm the address with
        it (signing up again starts over instead). The link signs the reader in; the new
        password is then an account change (``account.update_user``).
        """
        email = await self.email_request(form.email, client)
        await self.send_if_found(
            email, confirmed=True, kind="recovery", token_type="recovery_token", verify_type="recovery",
            flow=pkce(form, "recovery"), redirect_to=redirect_to, audit_action="user_recovery_requested",
            client=client,
        )
