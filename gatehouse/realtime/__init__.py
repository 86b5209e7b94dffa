"""Realtime: the database change feed for postgres_changes, and (beside it) the WebSocket side."""
