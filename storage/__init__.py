"""Persistence: SQLAlchemy models, sessions and the only SQL that touches user-owned rows."""
