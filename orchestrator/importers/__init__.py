"""Bringing models from other platforms in as cortexbox model projects (``cortexbox import ...``)."""
