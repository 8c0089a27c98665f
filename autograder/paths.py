"""Where the kit keeps things: repository root, fixtures, outputs."""
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def default_fixtures_dir() -> Path:
    """Fixture folder: `$HW2_FIXTURES_DIR`, else `<repo>/.fixtures` (git-ignored)."""
    return Path(os.environ.get("HW2_FIXTURES_DIR", REPO_ROOT / ".fixtures")).resolve()
