"""Where the project's own folders are."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

DEFAULT_MAPPINGS = REPO_ROOT / "mappings"
