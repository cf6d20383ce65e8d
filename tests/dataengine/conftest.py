"""Fixtures the data-engine tests share."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture()
def cat(train_catalog, tmp_path):
    """A private copy of the session's ingested catalog (tests/conftest.py::train_catalog): a test
    may caption, curate or damage it without touching the others."""
    p = tmp_path / "c.duckdb"
    shutil.copy(train_catalog, p)
    return p
