"""nbgrader configuration for hw2_dpo_ppo (used by `python -m autograder release` and the course folder)."""
c = get_config()  # noqa: F821 (provided by traitlets when nbgrader loads this file)

c.CourseDirectory.course_id = "llm-course-hw2"

# What the student sees in place of a solution region: the spec's TODO banner and a call to todo().
c.ClearSolutions.code_stub = {
    "python": "# ========== TODO ==========\n"
              "#      Your code here      =\n"
              "# ==========================\n"
              "todo()"
}
c.ClearSolutions.text_stub = "_Your answer here._"

# When nbgrader executes a notebook (autograde, validate), the kernel inherits this environment: the offline
# grading profile (tiny model fixture, a few steps, Hub and W&B offline) and the kit on the import path, so
# the hidden tests can `from autograder.checks import grade_cell`.
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

KIT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(KIT_ROOT))
from autograder.notebook import grading_env  # noqa: E402

for key, value in grading_env(Path(os.environ.get("HW2_GRADING_OUTPUT_DIR", "/tmp/hw2-autograde"))).items():
    os.environ.setdefault(key, value)


c.Execute.timeout = 300  # seconds per cell; the grading profile needs far less
