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

KIT_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(KIT_ROOT))
from autograder.notebook.execute import grading_env  # noqa: E402

# A submission runs in the kernel and can print its environment into the autograded notebook and the
# feedback: no credentials reach it. They are dropped from this process's environment before any kernel
# starts, the Hub's token file and cache point at a scratch folder, and the Hub and W&B are forced offline.
# Where bubblewrap exists, the kernel itself runs sandboxed (autograder/grading/kernel.py): it sees no home
# folder, no other process and no variable but the HW2_* settings.
from autograder.grading.kernel import KERNEL_NAME, install_kernelspec, is_secret  # noqa: E402
from autograder.grading.sandbox import INSTALL_HINT, bwrap_path, clean_leftovers  # noqa: E402

for key in [k for k in os.environ if is_secret(k)]:  # HF_TOKEN, HUGGING_FACE_HUB_TOKEN, WANDB_API_KEY, ...
    del os.environ[key]

OUTPUT_DIR = Path(os.environ.get("HW2_GRADING_OUTPUT_DIR", "/tmp/hw2-autograde"))
for key, value in grading_env(OUTPUT_DIR).items():
    os.environ.setdefault(key, value)
HF_SCRATCH = OUTPUT_DIR / "hf-home"  # no token file in it: a kernel that asks the Hub for one finds none
os.environ.update({
    "HF_HOME": str(HF_SCRATCH), "HF_TOKEN_PATH": str(HF_SCRATCH / "token"), "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
    "WANDB_MODE": "offline",
})


c.Execute.timeout = 300  # seconds per cell; the grading profile needs far less

# Commands that execute submissions refuse to start when the grader's own setup is broken: a missing sandbox
# or missing fixtures would otherwise show up as a zero in every student's feedback.
EXECUTING = bool({"autograde", "validate"} & set(sys.argv[1:3]))
UNSAFE = os.environ.get("HW2_UNSAFE_NO_SANDBOX") == "1"
if EXECUTING:
    from autograder.fixtures.build import fixture_paths

    if not fixture_paths().tiny.is_dir():
        raise SystemExit(f"hw2 grading setup: the offline fixtures are missing ({fixture_paths().root}); "
                         "build them with `python -m autograder fixtures` (or `make fixtures`), then rerun")
    if bwrap_path() is None and not UNSAFE:
        raise SystemExit("hw2 grading setup: " + INSTALL_HINT.replace("pass --unsafe-no-sandbox", "set HW2_UNSAFE_NO_SANDBOX=1"))
if EXECUTING and not UNSAFE:  # every kernel nbgrader starts from here on is the sandboxed one
    clean_leftovers()
    JUPYTER_DIR = OUTPUT_DIR / "jupyter"
    install_kernelspec(JUPYTER_DIR)
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(JUPYTER_DIR), os.environ.get("JUPYTER_PATH")]))
    SOCKETS = OUTPUT_DIR / "kernel-sockets"  # nbgrader runs one kernel at a time: only its sockets are here
    SOCKETS.mkdir(parents=True, exist_ok=True)
    c.Execute.kernel_name = KERNEL_NAME
    c.KernelManager.transport = "ipc"  # socket files the sandbox shares with nbgrader: it needs no network
    c.KernelManager.ip = str(SOCKETS / "kernel")
