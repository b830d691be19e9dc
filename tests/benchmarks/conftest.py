"""Fixtures for the cortexbox.benchmarks tests.

Data is read in place from ``$CORTEXBOX_DATA_DIR`` or ``<repo>/../shared/data``; it is never copied.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cortexbox.benchmarks import get_benchmark

DATA_DIR = Path(
    os.environ.get("CORTEXBOX_DATA_DIR") or Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
).resolve()
COWLEY = DATA_DIR / "cowley2023_v4"


def require_data(folder: str) -> Path:
    """The shared data root, after checking ``folder`` is in it: skip locally, fail in CI."""
    if not (DATA_DIR / folder).is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"shared data not found at {DATA_DIR / folder} in CI")
        pytest.skip(f"shared data not found at {DATA_DIR / folder} (set CORTEXBOX_DATA_DIR)")
    return DATA_DIR


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not COWLEY.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"shared data not found at {COWLEY} in CI")
        pytest.skip(f"shared data not found at {COWLEY} (set CORTEXBOX_DATA_DIR)")
    return DATA_DIR


@pytest.fixture(scope="session")
def bench(data_dir: Path):
    return get_benchmark("Cowley2023.V4-pls", data_dir=data_dir)


@pytest.fixture(scope="session")
def kriegeskorte_data_dir() -> Path:
    return require_data("kriegeskorte2008_92images")


@pytest.fixture(scope="session")
def geirhos_data_dir() -> Path:
    return require_data("geirhos2019_texture_shape")
