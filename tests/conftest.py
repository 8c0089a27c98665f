"""Shared pytest fixtures: the offline models and data sets, built once per machine and then reused."""
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from autograder.fixtures.build import FixturePaths, build_fixtures  # noqa: E402  (needs the repository on sys.path)


@pytest.fixture(scope="session")
def fixtures() -> FixturePaths:
    """The offline fixtures in the default folder: built on first use (under a minute), skipped afterwards."""
    return build_fixtures()


@pytest.fixture(scope="module")
def env(fixtures, tmp_path_factory):
    """The fast profile's environment, with a fresh output folder per test module."""
    from autograder.notebook.execute import offline_env

    return offline_env(fixtures, tmp_path_factory.mktemp("outputs"), "fast")


@pytest.fixture(scope="module")
def solution(env):
    """The instructor notebook's library cells (functions, constants) executed into one namespace."""
    from autograder.layout import SOURCE_NOTEBOOK
    from autograder.notebook.execute import load_namespace

    return load_namespace(SOURCE_NOTEBOOK, env)


@pytest.fixture(scope="module")
def context(fixtures):
    """The hidden checks' context: the real tokenizer and the tiny model."""
    from autograder.checks import CheckContext

    return CheckContext(fixtures.tiny)


@pytest.fixture(scope="session")
def fast_notebook_run(fixtures, tmp_path_factory):
    """The whole solution notebook executed once in the fast profile: (output folder, executed notebook).

    Shared by the tests of the notebook run and of the reviewer (which reviews the checkpoints it saves);
    treat both as read-only.
    """
    from autograder.layout import SOURCE_NOTEBOOK
    from autograder.notebook.execute import execute_notebook, offline_env

    out = tmp_path_factory.mktemp("fast-run")
    notebook = execute_notebook(SOURCE_NOTEBOOK, out / "executed.ipynb", offline_env(fixtures, out, "fast"),
                                timeout=600, progress=False)
    return out, notebook
