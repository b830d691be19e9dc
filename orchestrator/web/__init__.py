"""The cortexbox web app (``cortexbox web``): leaderboard, model, benchmark and compare pages, live runs over
server-sent events, and a JSON API under /api."""

from cortexbox.orchestrator.web.app import create_app

__all__ = ["create_app"]
