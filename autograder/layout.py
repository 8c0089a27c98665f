"""Every path and name the kit agrees on: repository root, notebooks, assignment name, fixtures folder.

This module imports nothing from `autograder`, so any module may import it without creating a cycle.
"""
import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent

# The assignment and its notebooks.
ASSIGNMENT = "hw2_dpo_ppo"
NOTEBOOK_NAME = f"{ASSIGNMENT}.ipynb"
SOURCE_PARTS_DIR = REPO_ROOT / "solutions" / "src"  # jupytext sources of the instructor notebook
SOURCE_NOTEBOOK = REPO_ROOT / "solutions" / NOTEBOOK_NAME  # instructor notebook (solutions, hidden tests)
RELEASE_NOTEBOOK = REPO_ROOT / NOTEBOOK_NAME  # student notebook
NBGRADER_CONFIG = PACKAGE_DIR / "notebook" / "nbgrader_config.py"

# Cells with this tag only define names (imports, helpers, TODO functions): the grader executes exactly those.
LIBRARY_TAG = "library"


def default_fixtures_dir() -> Path:
    """Fixture folder: `$HW2_FIXTURES_DIR`, else `<repo>/.fixtures` (git-ignored)."""
    return Path(os.environ.get("HW2_FIXTURES_DIR", REPO_ROOT / ".fixtures")).resolve()
