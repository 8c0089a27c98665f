"""Shared pytest fixtures: the offline models and data sets, built once per machine and then reused."""
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from autograder.fixtures import FixturePaths, build_fixtures  # noqa: E402  (needs the repository on sys.path)


@pytest.fixture(scope="session")
def fixtures() -> FixturePaths:
    """The offline fixtures in the default folder: built on first use (under a minute), skipped afterwards."""
    return build_fixtures()
