"""Types for application code, generated from the database: ``gatehouse gen types``.

``typescript`` writes the ``Database`` type supabase-js takes; ``python`` writes TypedDicts for
supabase-py's rows. Both read the catalog through ``catalog.load_catalog``, which builds on the
data API's own schema cache, so they describe what ``/rest/v1`` serves.
"""
