"""Alembic migrations of the registry's schema (``alembic upgrade head``; ``Registry`` runs them on open).

New revision after changing ``registry/models.py``: ``alembic revision --autogenerate -m "what changed"`` in the
repository root (``alembic.ini``), then read and edit the generated file in ``versions/``.
"""
