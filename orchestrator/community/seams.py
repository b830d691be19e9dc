"""Where the community meets issue 12's scoring package and image registry, in one place.

Scoring: ``cortexbox.orchestrator.scoring`` when it is there, else today's ``jobs`` and ``ingest`` (delete the
``except`` branch once the package has landed). The image registry: ``pin`` in submissions.py pushes to it when
``$CORTEXBOX_IMAGE_REGISTRY`` names one, else the engine's image id is the digest.
"""

from __future__ import annotations

try:
    from cortexbox.orchestrator.scoring import ScoreRequest, register_benchmark, resolve_benchmark, score_model
except ImportError:  # pragma: no cover - the tree before orchestrator/scoring/
    from cortexbox.orchestrator.ingest import register_benchmark, resolve_benchmark  # type: ignore[no-redef]
    from cortexbox.orchestrator.jobs import ScoreRequest, score_model  # type: ignore[no-redef]

__all__ = ["ScoreRequest", "register_benchmark", "resolve_benchmark", "score_model"]
