"""Run the definition cells of a homework notebook as plain Python, outside Jupyter.

Cells tagged `library` only define names (imports, helpers, the TODO functions), so executing them gives
the notebook's functions without training anything. Tests and benchmarks use the instructor notebook this
way; the grader does the same with a student's answer cells.
"""
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import nbformat

from autograder.layout import LIBRARY_TAG, REPO_ROOT, SOURCE_NOTEBOOK


def library_sources(notebook: nbformat.NotebookNode) -> list[str]:
    """Source code of the cells tagged `library`, in notebook order."""
    return [
        cell.source for cell in notebook.cells
        if cell.cell_type == "code" and LIBRARY_TAG in cell.metadata.get("tags", [])
    ]


@contextmanager
def environment(env: dict[str, str]):
    """Temporarily add `env` to os.environ."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def load_namespace(path: Path = SOURCE_NOTEBOOK, env: dict[str, str] | None = None) -> dict:
    """Execute the library cells of the notebook at `path` (with `env` set) and return the resulting globals."""
    notebook = nbformat.read(path, as_version=4)
    namespace: dict = {"__name__": "hw2_notebook"}
    with environment(env or {}):
        for index, source in enumerate(library_sources(notebook)):
            exec(compile(source, f"<{path.name} library cell {index}>", "exec"), namespace)
    return namespace


def offline_env(fixtures, output_dir: Path, profile: str) -> dict[str, str]:
    """HW2_* variables that point the notebook at the offline fixtures, with the Hub and W&B offline."""
    model = fixtures.tiny if profile == "fast" else fixtures.smollm2
    return {
        "HW2_PROFILE": profile,
        "HW2_FAST_DEV_RUN": "1" if profile == "fast" else "0",
        "HW2_MODEL_ID": str(model),
        "HW2_DATASET_ID": str(fixtures.preferences),
        "HW2_UNSEEN_DATASET_ID": str(fixtures.unseen),
        "HW2_OUTPUT_DIR": str(output_dir),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }


def grading_env(output_dir: Path) -> dict[str, str]:
    """The environment of a graded run: the fast profile on the default offline fixtures."""
    from autograder.fixtures.build import fixture_paths

    fixtures = fixture_paths()
    return {**offline_env(fixtures, output_dir, "fast"), "HW2_FIXTURES_DIR": str(fixtures.root)}


# Headless runs have no widget front end: make `tqdm.auto` draw text bars (on stderr) instead of widgets.
TEXT_PROGRESS_BARS = "import tqdm.auto, tqdm.std\ntqdm.auto.tqdm = tqdm.std.tqdm\n"


def execute_notebook(
    path: Path, output_path: Path, env: dict[str, str], timeout: int = 1800, progress: bool = True
) -> nbformat.NotebookNode:
    """Execute a notebook headless in a fresh kernel with `env` added to the environment.

    With `progress`, each cell's printed output and progress bars are echoed live. The executed notebook is
    written to `output_path` even when a cell fails (the error is then re-raised).
    """
    from nbclient import NotebookClient

    class EchoingClient(NotebookClient):
        def output(self, outs, msg, display_id, cell_index):
            if progress and msg["msg_type"] == "stream":
                stream = sys.stdout if msg["content"]["name"] == "stdout" else sys.stderr
                stream.write(msg["content"]["text"])
                stream.flush()
            return super().output(outs, msg, display_id, cell_index)

    notebook = nbformat.read(path, as_version=4)
    code_cells = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"]

    def on_cell_start(cell, cell_index, **_):
        if progress and cell_index in code_cells:
            first_line = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
            print(f"[cell {code_cells.index(cell_index) + 1}/{len(code_cells)}] {first_line[:70]}", flush=True)

    client = EchoingClient(
        notebook, timeout=timeout, kernel_name="python3",
        resources={"metadata": {"path": str(output_path.parent)}}, on_cell_start=on_cell_start,
    )
    output_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as ipython_dir:
        startup = Path(ipython_dir) / "profile_default" / "startup"
        startup.mkdir(parents=True)
        (startup / "00-text-progress-bars.py").write_text(TEXT_PROGRESS_BARS)
        try:
            client.execute(env={**os.environ, **env, "IPYTHONDIR": ipython_dir})
        finally:
            nbformat.write(notebook, output_path)
    return notebook
