"""Community competitions: accounts and teams with hashed API tokens (``accounts``), submitted image tarballs
checked before they reach the engine (``archive``, ``submissions``), and competitions with public and private
tracks, quotas and boards (``competitions``). Everything lives in the *community registry*, a registry database of
its own (``community_url``): runs and scores of submissions never appear on the public leaderboard's pages and API,
which read the main registry and do not know about private benchmarks."""

from __future__ import annotations

from cortexbox.benchmarks.settings import settings


def community_url(url: str | None = None) -> str:
    """The community registry's URL: ``url`` if given, else ``$CORTEXBOX_COMMUNITY_URL``, else the SQLite file
    ``community.db`` in the cortexbox home (made if missing). A separate database, so that the public pages cannot
    show a private score."""
    if url:
        return url
    if settings().community_database_url:
        return settings().community_database_url
    home = settings().home
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'community.db'}"
