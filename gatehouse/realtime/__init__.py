"""Realtime: Supabase Realtime's WebSocket protocol (broadcast, presence, database changes) under RLS.

``socket`` and ``channel`` speak the Phoenix channels protocol; ``service`` routes broadcasts,
presence (``presence``) and database changes to channels, and shares them between processes
through PostgreSQL (``bus``). Database changes are captured by triggers on the tables of the
``supabase_realtime`` publication (``publication``), queued in ``realtime.changes`` and read in
commit order by ``feed``; ``visibility`` decides, as each subscriber, who may see a row.
"""
