"""Realtime: Supabase Realtime's WebSocket protocol (broadcast, presence, database changes) under RLS."""
