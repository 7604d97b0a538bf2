"""Where the project's own folders are, and where a plant's configuration is.

A plant may keep its flows, crosswalks and suites in a repository of its own and install the
package: ``ETL_MAPPINGS_DIR`` and ``ETL_EXPECTATIONS_DIR`` (or the command line's ``--mappings``
and ``--expectations``) name its folders; without them, the clone's ``mappings/`` and the
``expectations/`` beside the mappings folder are read.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

DEFAULT_MAPPINGS = REPO_ROOT / "mappings"
MAPPINGS_ENV = "ETL_MAPPINGS_DIR"
EXPECTATIONS_ENV = "ETL_EXPECTATIONS_DIR"


def configured_mappings() -> Path:
    """The mappings folder ``ETL_MAPPINGS_DIR`` names, else the clone's ``mappings/``."""
    return Path(os.environ.get(MAPPINGS_ENV) or DEFAULT_MAPPINGS)


def configured_expectations() -> Path | None:
    """The suites folder ``ETL_EXPECTATIONS_DIR`` names, else None (``expectations/`` beside
    the mappings folder)."""
    named = os.environ.get(EXPECTATIONS_ENV)
    return Path(named) if named else None
