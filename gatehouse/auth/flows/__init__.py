"""The auth flows, one module each, as django-allauth splits its account flows.

``signup`` (a new account), ``login`` (password, refresh, PKCE code, sign-out), ``verify``
(using a link or code, and asking for one), ``recover`` (a password-reset email) and
``account`` (the signed-in user's own changes), over what ``base`` shares. Handlers and the
web pages call them with plain arguments and get ``auth.models`` values back; nothing here
knows HTTP. ``auth.service.AuthService`` builds them all once.
"""
