"""`python -m autograder course DIR`: an nbgrader course folder wired to this kit.

It writes `DIR/nbgrader_config.py`, which loads the kit's `autograder/notebook/nbgrader_config.py` (stubs, grading
profile, timeouts), and copies the instructor notebook to `DIR/source/hw2_dpo_ppo/`. From DIR the usual
nbgrader commands then work: generate_assignment, collect/autograde, generate_feedback, export.
"""
import argparse
import shutil
from pathlib import Path

from autograder.layout import ASSIGNMENT, NBGRADER_CONFIG, NOTEBOOK_NAME, SOURCE_NOTEBOOK

COURSE_CONFIG = '''"""nbgrader configuration of this course: everything comes from the hw2-dpo-ppo kit."""
c = get_config()  # noqa: F821
load_subconfig({config!r})  # noqa: F821
c.CourseDirectory.root = {root!r}
'''


def init_course(root: Path, notebook: Path = SOURCE_NOTEBOOK) -> Path:
    """Create (or refresh) the course folder at `root` with `notebook` as the assignment source.

    Returns the path of the course's config file.
    """
    root = root.resolve()
    source = root / "source" / ASSIGNMENT
    source.mkdir(parents=True, exist_ok=True)
    shutil.copy(notebook, source / NOTEBOOK_NAME)
    config = root / "nbgrader_config.py"
    config.write_text(COURSE_CONFIG.format(config=str(NBGRADER_CONFIG), root=str(root)))
    return config


def run(args: argparse.Namespace) -> int:
    config = init_course(args.dir)
    print(f"course folder ready: {config.parent}\nnext: cd {config.parent} && nbgrader generate_assignment {ASSIGNMENT}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("course", help="create an nbgrader course folder that uses this kit")
    parser.add_argument("dir", type=Path, help="the course folder to create or refresh")
    parser.set_defaults(func=run)
