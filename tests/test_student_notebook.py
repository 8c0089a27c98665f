"""What a student sees: install bounds, badges, login, editable switches, points per TODO, examples that run,
short errors for unfinished TODOs, a visible test of `dpo_batch_loss` that catches wrong answers, and a
training loop that really trains with the student's step."""
import doctest
import math
import re
import shlex

import nbformat
import pytest
import torch

from autograder.checks import all_checks
from autograder.grading.result import homework_points
from autograder.grading.submission import autograded_tests
from autograder.layout import RELEASE_NOTEBOOK, REPO_ROOT, SOURCE_NOTEBOOK
from mutants import MUTANTS
from mutants.catalogue import namespace_with

README = REPO_ROOT / "README.md"


@pytest.fixture(scope="module")
def release():
    return nbformat.read(RELEASE_NOTEBOOK, as_version=4)


def grade_id(cell) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def locked(cell) -> bool:
    return bool(cell.metadata.get("nbgrader", {}).get("locked"))


def requirement_set(lines) -> set[str]:
    return {line.replace(" ", "") for line in lines if line and not line.startswith("#")}


# ------------------------------------------------------------------ install cell, badges, login, switches
def test_install_cell_has_the_bounds_of_requirements_txt(release):
    install = [c for c in release.cells if c.cell_type == "code" and "%pip install" in c.source]
    assert len(install) == 1, "expected exactly one install cell"
    line = next(line for line in install[0].source.splitlines() if "%pip install" in line)
    packages = [word for word in shlex.split(line.split("%pip install", 1)[1]) if not word.startswith("-")]
    requirements = (REPO_ROOT / "requirements.txt").read_text().splitlines()
    assert requirement_set(packages) == requirement_set(line.strip() for line in requirements)


def badge_urls(text: str) -> tuple[set[str], set[str]]:
    colab = set(re.findall(r"https://colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/blob/main/hw2_dpo_ppo\.ipynb", text))
    kaggle = set(re.findall(r"https://kaggle\.com/kernels/welcome\?src=https://github\.com/([\w.-]+/[\w.-]+)/blob/main/hw2_dpo_ppo\.ipynb", text))
    return colab, kaggle


def test_first_cell_and_readme_have_the_same_colab_and_kaggle_links(release):
    first = release.cells[0]
    assert first.cell_type == "markdown"
    colab, kaggle = badge_urls(first.source)
    assert len(colab) == 1 and colab == kaggle, (colab, kaggle)
    assert "colab-badge.svg" in first.source and "open-in-kaggle.svg" in first.source
    assert badge_urls(README.read_text()) == (colab, kaggle)


def test_wandb_switch_is_in_an_editable_cell_before_the_login(release):
    defining = [i for i, c in enumerate(release.cells) if c.cell_type == "code"
                and re.search(r"^ENABLE_WANDB\s*=", c.source, re.MULTILINE)]
    assert len(defining) == 1
    assert not locked(release.cells[defining[0]]) and "nbgrader" not in release.cells[defining[0]].metadata
    login = [i for i, c in enumerate(release.cells) if c.cell_type == "code" and "interpreter_login()" in c.source]
    assert len(login) == 1 and defining[0] < login[0]
    # every text after the Setup section that mentions the switch sends students back to that cell
    later = [c.source for c in release.cells[login[0] + 1:] if c.cell_type == "markdown" and "ENABLE_WANDB" in c.source]
    assert later and all("*Setup* section" in text for text in later)


def test_login_cell_reads_secrets_then_the_environment_then_asks(release):
    login = next(c for c in release.cells if c.cell_type == "code" and "interpreter_login()" in c.source).source
    assert login.index("if PUSH_TO_HUB:") < login.index('find_secret("HF_TOKEN")') < login.index("interpreter_login()")
    assert 'find_secret("WANDB_API_KEY")' in login and "if ENABLE_WANDB" in login


def test_find_secret_falls_back_to_the_environment(solution, monkeypatch):
    monkeypatch.setenv("HW2_TEST_SECRET", "hf_example")
    assert solution["find_secret"]("HW2_TEST_SECRET") == "hf_example"
    monkeypatch.delenv("HW2_TEST_SECRET")
    assert solution["find_secret"]("HW2_TEST_SECRET") is None


def test_the_fast_run_does_not_log_in(fast_notebook_run):
    _, notebook = fast_notebook_run
    login = next(c for c in notebook.cells if c.cell_type == "code" and "interpreter_login()" in c.source)
    printed = "".join(o.get("text", "") for o in login.get("outputs", []))
    assert "Not logging in" in printed


# ------------------------------------------------------------------ points
def readme_points() -> dict[str, str]:
    """Answer cell id -> points, from README's 'Where each TODO is graded' table (autograded rows)."""
    table = README.read_text().split("### Where each TODO is graded", 1)[1].split("\n\n", 2)[1]
    points = {}
    for row in table.splitlines()[2:]:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        names = re.findall(r"`(\w+)`", cells[0])
        if cells[1].startswith("`test_") and names:
            points[names[0]] = cells[2].replace(" extra", "")
            for name in names[1:]:
                points[name] = f"shares:{names[0]}"
    return points


def todo_heading(notebook, answer_id: str) -> str:
    """The markdown cells between the previous code cell and the answer cell `answer_id`."""
    index = next(i for i, c in enumerate(notebook.cells) if grade_id(c) == answer_id)
    text = []
    for cell in reversed(notebook.cells[:index]):
        if cell.cell_type == "code":
            break
        text.append(cell.source)
    return "\n".join(text)


def test_every_todo_heading_names_its_points(release):
    points = readme_points()
    answers = [grade_id(c) for c in release.cells
               if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")]
    assert set(answers) <= set(points) | {"build_model_card"}, set(answers) - set(points)
    for answer in answers:
        heading = todo_heading(release, answer)
        assert f"TODO: `{answer}`" in heading and "point" in heading, (answer, heading)
        expected = points.get(answer, "1")
        if expected.startswith("shares:"):
            assert f"`{expected.split(':')[1]}`" in heading, (answer, heading)
        else:
            assert re.search(rf"(?<![\d.]){re.escape(expected)} (extra )?points?", heading), (answer, expected, heading)


def test_bonus_and_starred_wording_agree(release):
    markdown = "\n".join(c.source for c in release.cells if c.cell_type == "markdown")
    assert "Bonus: model cards on the Hub [1 extra point, graded by hand]" in markdown
    assert "Bonus: model cards on the Hub | 1 extra (graded by hand)" in markdown
    assert markdown.count("[1 extra point]") == 3  # the three starred tasks
    assert "| `bonus_model_cards` (manual) | 1 extra |" in README.read_text()


def test_section_table_says_what_the_grader_counts(release):
    """The notebook's table, the grading JSON's `points` and nbgrader's maximum come from one definition."""
    tests = autograded_tests()
    checks = all_checks()
    points = homework_points(tests, {gid for gid in tests if checks[gid].extra_credit})
    intro = release.cells[0].source
    section_table = intro[intro.index("| Section | Points"):].split("\n\n")[0]
    table = dict(re.findall(r"^\| ([^|]+?) \| ([^|]+?) \|", section_table, flags=re.MULTILINE)[2:])
    sections = {name: value for name, value in table.items() if not name.startswith(("Bonus", "Starred"))}
    assert sum(float(value) for value in sections.values()) == pytest.approx(points["homework"]), table
    bonus = next(value for name, value in table.items() if name.startswith("Bonus"))
    assert bonus == f"{points['bonus']:g} extra (graded by hand)"
    starred = next(value for name, value in table.items() if name.startswith("Starred"))
    assert starred == "1 extra point each" and points["starred"] == 3 * 1
    assert f"The homework is out of {points['homework']:g} points" in release.cells[0].source
    assert f"out of {points['nbgrader_max']:g}" in release.cells[0].source


# ------------------------------------------------------------------ examples and first errors
@pytest.mark.parametrize("function", ["pad", "pad_collate_fn"])
def test_docstring_examples_run_against_the_solution(solution, release, function):
    tests = doctest.DocTestFinder().find(solution[function], function, globs=dict(solution))
    examples = sum(len(t.examples) for t in tests)
    assert examples >= 2
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        runner.run(test)
    assert runner.failures == 0
    student_cell = next(c for c in release.cells if grade_id(c) == function)
    assert ">>> " in student_cell.source and "todo()" in student_cell.source


def release_answer(release, answer_id: str) -> str:
    return next(c for c in release.cells if grade_id(c) == answer_id).source


@pytest.fixture(scope="module")
def raw_pairs(solution):
    return solution["load_preferences"](solution["DATASET_ID"]).select(range(8))


@pytest.fixture(scope="module")
def tokenizer(solution):
    return solution["load_tokenizer"](solution["MODEL_ID"])


def test_an_unfilled_todo_fails_briefly_before_mapping(solution, release, raw_pairs, tokenizer):
    student = namespace_with(solution, {"apply_chat_template": release_answer(release, "apply_chat_template")})
    with pytest.raises(NotImplementedError, match="`apply_chat_template` is not written yet") as error:
        student["run_on_one_example"](student["apply_chat_template"], raw_pairs[0], tokenizer=tokenizer)
    assert error.value.__cause__ is None and error.value.__suppress_context__
    formatted = solution["run_on_one_example"](solution["apply_chat_template"], raw_pairs[0], tokenizer=tokenizer)
    assert formatted["prompt"].endswith("<|im_start|>assistant\n")


def test_every_map_over_a_todo_is_checked_on_one_example_first():
    source = SOURCE_NOTEBOOK.read_text()
    for function in ("apply_chat_template", "tokenize_row", "to_implicit_prompt_preferences"):
        assert f"run_on_one_example({function}," in source, function


# ------------------------------------------------------------------ the visible test of dpo_batch_loss
def visible_part(cell_id: str) -> str:
    cell = next(c for c in nbformat.read(SOURCE_NOTEBOOK, as_version=4).cells if grade_id(c) == cell_id)
    return cell.source.split("### BEGIN HIDDEN TESTS")[0]


@pytest.fixture(scope="module")
def tokenized(solution, raw_pairs, tokenizer):
    return solution["tokenized_preferences"](raw_pairs, tokenizer)


def run_visible_dpo_training_test(namespace: dict, tokenizer, dataset) -> str:
    import contextlib
    import io

    namespace = {**namespace, "tokenizer": tokenizer, "dataset": dataset}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(visible_part("test_dpo_training"), "<visible test_dpo_training>", "exec"), namespace)
    return printed.getvalue()


def test_visible_dpo_batch_loss_test_passes_the_solution(solution, tokenizer, tokenized):
    printed = run_visible_dpo_training_test(namespace_with(solution, {}), tokenizer, tokenized)
    assert "dpo_batch_loss looks right" in printed


SUMMED_LOSS = '''
def dpo_batch_loss(model, ref_model, batch, beta, max_seq_len=None):
    logps = {}
    for answer in ("chosen", "rejected"):
        ids, attn, loss_mask = concat_prompt_completion(batch["prompt_input_ids"], batch["prompt_attn_mask"],
                                                        batch[f"{answer}_input_ids"], batch[f"{answer}_attn_mask"],
                                                        max_seq_len)
        logps[answer] = get_log_prob(sequence_logits(model, ids, attn), ids, loss_mask)
        with torch.no_grad():
            logps["ref_" + answer] = get_log_prob(sequence_logits(ref_model, ids, attn), ids, loss_mask)
    margins = beta * ((logps["chosen"] - logps["ref_chosen"]) - (logps["rejected"] - logps["ref_rejected"]))
    return -F.logsigmoid(margins).sum(), (margins > 0).float().mean(), margins.mean().detach()
'''


@pytest.mark.parametrize("wrong, message", [
    (MUTANTS["batch_loss_reference_with_gradients"]["source"], "the reference model got gradients"),
    (MUTANTS["batch_loss_policy_under_no_grad"]["source"], "carries the policy's gradients"),
    (SUMMED_LOSS, "the loss should be log 2"),
])
def test_visible_dpo_batch_loss_test_catches_wrong_answers(solution, tokenizer, tokenized, wrong, message):
    student = namespace_with(solution, {"dpo_batch_loss": wrong})
    with pytest.raises(AssertionError, match=message):
        run_visible_dpo_training_test(student, tokenizer, tokenized)


# ------------------------------------------------------------------ the training loop runs the student's step
@pytest.fixture(scope="module")
def with_reference_logps(solution, tokenized, tokenizer):
    model = solution["load_causal_lm"](solution["MODEL_ID"], trainable=False)
    return solution["precompute_reference_logps"](model, tokenized, tokenizer, solution["MICRO_BATCH_SIZE"],
                                                  solution["MAX_SEQ_LEN"])


SHIFTED_LOSS = '''
_solution_dpo_batch_loss = dpo_batch_loss

def dpo_batch_loss(model, ref_model, batch, beta, max_seq_len=None):
    loss, accuracy, margin = _solution_dpo_batch_loss(model, ref_model, batch, beta, max_seq_len)
    return loss + 100.0, accuracy, margin
'''


@pytest.mark.parametrize("my_step_steps", [2, 1, 0])
def test_train_dpo_trains_with_the_students_step_first(solution, with_reference_logps, tokenizer, my_step_steps):
    # a dpo_batch_loss that adds 100 to the loss shows which steps it computed
    student = namespace_with(solution, {"dpo_batch_loss": SHIFTED_LOSS})
    torch.manual_seed(0)
    model = student["load_causal_lm"](student["MODEL_ID"], trainable=True)
    reference = student["load_causal_lm"](student["MODEL_ID"], trainable=False) if my_step_steps else None
    history = student["train_dpo"](model, with_reference_logps, tokenizer, 2, ref_model=reference,
                                   my_step_steps=my_step_steps)
    expected = ["dpo_batch_loss"] * my_step_steps + ["fast_dpo_batch_loss"] * (2 - my_step_steps)
    assert history["step_function"] == expected
    assert all(len(history[key]) == 2 for key in ("loss", "reward_accuracy", "reward_margin"))
    for used, loss in zip(history["step_function"], history["loss"]):
        assert (loss > 50) == (used == "dpo_batch_loss"), history
    assert history["loss"][0] == pytest.approx(math.log(2) + (100 if my_step_steps else 0), abs=1e-4)


def test_train_dpo_refuses_the_students_step_without_a_reference(solution, with_reference_logps, tokenizer):
    model = solution["load_causal_lm"](solution["MODEL_ID"], trainable=True)
    with pytest.raises(ValueError, match="reference model"):
        solution["train_dpo"](model, with_reference_logps, tokenizer, 1, my_step_steps=1)


def test_fast_run_trains_with_the_students_step(fast_notebook_run):
    _, notebook = fast_notebook_run
    training = next(c for c in notebook.cells if c.cell_type == "code" and "history = train_dpo(model" in c.source)
    printed = "".join(o.get("text", "") for o in training.get("outputs", []))
    assert re.search(r"(?<!fast_)dpo_batch_loss: steps 1-2, loss 0\.69", printed), printed
    assert "fast_dpo_batch_loss: steps" not in printed


# ------------------------------------------------------------------ plots people read
def plot_cell(name: str) -> str:
    cells = [c.source for c in nbformat.read(SOURCE_NOTEBOOK, as_version=4).cells
             if c.cell_type == "code" and f'PLOTS_DIR / "{name}.png"' in c.source]
    assert len(cells) == 1, name
    return cells[0]


def draw(source: str, namespace: dict, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    namespace = {**namespace, "PLOTS_DIR": tmp_path, "METRICS": {}}
    plt.close("all")
    exec(compile(source, "<plot cell>", "exec"), namespace)
    fig = namespace["fig"]
    fig.canvas.draw()
    assert (tmp_path / next(p.name for p in tmp_path.iterdir())).stat().st_size > 0
    return fig


def legend_overlaps_data(ax) -> bool:
    """Whether the axes' own legend box covers any plotted point (in display coordinates)."""
    legend = ax.get_legend()
    if legend is None:
        return False
    box = legend.get_window_extent()
    points = [line.get_xydata() for line in ax.get_lines()] + [c.get_offsets() for c in ax.collections]
    return any(box.contains(x, y) for xy in points if len(xy) for x, y in ax.transData.transform(xy))


def test_dpo_training_plot_labels_both_step_functions_and_has_no_offset_text(solution, tmp_path):
    # a loss that barely moves, as in a short run: without useoffset=False matplotlib writes "+6.93e-1" on top
    history = {"loss": [0.693147, 0.693140, 0.693101, 0.693010], "reward_accuracy": [0.0, 0.5, 0.75, 1.0],
               "reward_margin": [0.0, 1e-5, 2e-5, 4e-5],
               "step_function": ["dpo_batch_loss"] * 2 + ["fast_dpo_batch_loss"] * 2}
    fig = draw(plot_cell("dpo_training"), {**solution, "history": history}, tmp_path)
    axes = fig.axes
    assert len(axes) == 3 and all(ax.get_ylabel() for ax in axes)
    renderer = fig.canvas.get_renderer()
    assert not any(ax.yaxis.get_offset_text().get_text().startswith("+") for ax in axes)  # no offset, only scales
    for ax in axes:  # a scale label such as 1e-5 sits above the plot, below its title
        scale = ax.yaxis.get_offset_text()
        assert not scale.get_text() or not scale.get_window_extent(renderer).overlaps(ax.title.get_window_extent(renderer))
    assert any(ax.yaxis.get_offset_text().get_text() for ax in axes)  # the margins' scale label is drawn
    labels = [text.get_text() for legend in fig.legends for text in legend.get_texts()]
    assert "your dpo_batch_loss" in labels and "fast_dpo_batch_loss" in labels
    assert all(ax.get_legend() is None for ax in axes)  # one legend below the panels, over no curve


def test_logprob_histograms_have_a_legend_and_labels_in_every_panel(solution, tmp_path):
    rng = torch.Generator().manual_seed(0)
    groups = ("train chosen", "train rejected", "held-out chosen", "unseen text")
    models = {"reference": "ref", "DPO": "dpo", "PPO": "ppo"}
    log_probs = {m: {g: {"mean": (torch.randn(30, generator=rng) - 4).numpy(),
                          "total": (torch.randn(30, generator=rng) * 20 - 200).numpy()} for g in groups} for m in models}
    namespace = {**solution, "log_probs": log_probs, "analysis_models": models,
                 "analysis_groups": {g: [] for g in groups}}
    fig = draw(plot_cell("logprob_histograms"), namespace, tmp_path)
    assert len(fig.axes) == 6
    for ax in fig.axes:
        assert ax.get_ylabel() and ax.get_xlabel() and ax.get_legend() is not None
        assert [t.get_text() for t in ax.get_legend().get_texts()] == list(groups)
        assert all(patch.get_fill() is False for patch in ax.patches)  # outlines, not bars hiding each other


def test_reward_vs_diversity_plot_has_labels_and_its_legend_beside_the_points(solution, tmp_path):
    table = {name: {"mean_reward": r, "win_rate": 0.5, "distinct_1": 0.7, "distinct_2": d, "entropy": e}
             for name, r, d, e in (("reference", 0.4, 0.97, 2.9), ("DPO", 0.6, 0.95, 3.0), ("PPO", 0.3, 0.98, 3.4))}
    source = plot_cell("reward_vs_diversity").split("for name in starred_models:")[0]
    fig = draw(source, {**solution, "starred_table": table}, tmp_path)
    assert all(ax.get_ylabel() and ax.get_xlabel() for ax in fig.axes)
    assert not any(legend_overlaps_data(ax) for ax in fig.axes)
