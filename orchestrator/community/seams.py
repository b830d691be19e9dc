"""Where the community meets issue 12's scoring package and image registry, in one place.

Scoring: ``cortexbox.orchestrator.scoring``'s ``score_model``, called once per (submission, benchmark, attempt) by
community/tasks.py, in issue 12's Celery workers (a task and a job row per (submission, attempt): issue 12's
``workers.enqueue`` makes one job per (model build, benchmark version), which would merge two teams' identical
images and never rescore), or in the web process without a broker. The image registry: ``pin`` in submissions.py
pushes to it when ``$CORTEXBOX_IMAGE_REGISTRY`` names one, else the engine's image id is the digest.
"""

from __future__ import annotations

from cortexbox.orchestrator.scoring import ScoreRequest, register_benchmark, resolve_benchmark, score_model

__all__ = ["ScoreRequest", "register_benchmark", "resolve_benchmark", "score_model"]
