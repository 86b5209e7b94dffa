"""The admin dashboard at ``/_/``: its own administrators, sessions and audit trail, and pages
built on the same services as the APIs (``auth.admin.AdminService`` for users)."""
