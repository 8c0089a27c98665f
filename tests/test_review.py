"""`python -m autograder review`: the reviewer's one command, offline, on checkpoints saved by the notebook.

The review settings are tiny (a few pairs, prompts and new tokens) so that the file stays fast on the tiny model.
"""
import json
import shutil

import pytest
import torch
from huggingface_hub import ModelCard
from huggingface_hub import constants as hub_constants
from huggingface_hub import errors as hub_errors
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from autograder.__main__ import main
from autograder.review import EXIT_INCOMPLETE, review
from autograder.review.findings import KINDS, CheckpointReview
from autograder.review.load import (
    REVIEW_PROMPTS,
    Loader,
    base_from_checkpoints,
    explain_load_error,
    normalise,
    probe_hub,
    resolve_sources,
)
from autograder.review.measure import (
    beta_from_card,
    card_metrics_in_body,
    is_degenerate,
    repetition_ratio,
    style_figures,
)
from autograder.review.report import render_markdown, suggest_bonus
from autograder.review.verdicts import Reviewer

SMALL = dict(pairs=32, prompts=2, max_new_tokens=8, progress=False)  # 32 pairs: 12% of labels are flipped
EXPECTED_CHECKS = {
    "dpo": ["architecture", "loads", "tokenizer", "differs from base", "generations", "style", "implicit reward",
            "KL drift", "model card"],
    "ppo": ["architecture", "loads", "tokenizer", "differs from base", "generations", "style", "KL drift",
            "reward vs base", "model card"],
    "reward-model": ["architecture", "loads", "tokenizer", "differs from base", "pairwise accuracy",
                     "score depends on the answer", "model card"],
}


@pytest.fixture(scope="module", autouse=True)
def hub_offline():
    """The Hub is unreachable here: offline mode makes a Hub id fail at once instead of after retries."""
    patch = pytest.MonkeyPatch()
    patch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    yield
    patch.undo()


@pytest.fixture(scope="module")
def fast_run(fast_notebook_run):
    """The checkpoints the solution notebook saves in fast-dev-run mode (tiny model, a few steps)."""
    return fast_notebook_run[0]


@pytest.fixture(scope="module")
def fast_review(fast_run, fixtures, tmp_path_factory):
    out = tmp_path_factory.mktemp("review")
    report = review(fast_run, base=fixtures.tiny, dataset=fixtures.preferences, expect="smoke", out=out, **SMALL)
    return report, out


@pytest.fixture(scope="module")
def broken(fast_run, fixtures, tmp_path_factory):
    """A broken submission: the base model as "DPO" (card without metadata), a two-label reward model and a PPO
    folder whose weights file is cut in half."""
    root = tmp_path_factory.mktemp("broken")
    untrained = root / "dpo"
    shutil.copytree(fixtures.tiny, untrained)
    (untrained / "README.md").write_text("# My DPO model\n\nTrained with DPO. Accuracy 0.9 on held-out pairs.\n")

    two_labels = root / "reward-model"
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(fixtures.tiny, num_labels=2)
    model.config.pad_token_id = 0
    model.save_pretrained(two_labels)
    AutoTokenizer.from_pretrained(fixtures.tiny).save_pretrained(two_labels)
    shutil.copy(fast_run / "reward-model" / "README.md", two_labels / "README.md")

    truncated = root / "ppo"
    shutil.copytree(fast_run / "ppo", truncated)
    weights = truncated / "model.safetensors"
    with weights.open("r+b") as handle:
        handle.truncate(weights.stat().st_size // 2)

    report = review(dpo=untrained, ppo=truncated, reward_model=two_labels, base=fixtures.tiny,
                       dataset=fixtures.preferences, expect="smoke", **SMALL)
    return report["checkpoints"], report


def checks_of(checkpoint: dict) -> dict[str, dict]:
    return {check["name"]: check for check in checkpoint["checks"]}


# ---------------------------------------------------------------- the solution's checkpoints

def test_fast_run_checkpoints_pass_every_check(fast_review):
    report, _ = fast_review
    for kind, names in EXPECTED_CHECKS.items():
        checkpoint = report["checkpoints"][kind]
        assert checkpoint["error"] is None, checkpoint["error"]
        assert [check["name"] for check in checkpoint["checks"]] == names
        not_passed = [(c["name"], c["status"], c["detail"]) for c in checkpoint["checks"] if c["status"] != "pass"]
        assert not not_passed, f"{kind}: {not_passed}"
    assert report["summary"]["fail"] == report["summary"]["warn"] == 0
    assert report["suggested_bonus"] == 1, report["bonus_reason"]


def test_fast_run_metrics_are_measured(fast_review):
    report, _ = fast_review
    dpo = checks_of(report["checkpoints"]["dpo"])
    assert dpo["implicit reward"]["metrics"]["pairs"] == SMALL["pairs"]
    assert dpo["implicit reward"]["metrics"]["beta"] == pytest.approx(0.1)  # read from the card's hyper-parameters
    assert 0 < dpo["differs from base"]["metrics"]["max_abs_diff"]
    assert dpo["KL drift"]["metrics"]["kl_per_sequence"] >= 0
    rm = checks_of(report["checkpoints"]["reward-model"])
    assert 0 <= rm["pairwise accuracy"]["metrics"]["accuracy"] <= 1
    assert rm["score depends on the answer"]["metrics"]["mean_abs_answer_difference"] > 0
    ppo = checks_of(report["checkpoints"]["ppo"])
    assert {"ppo_mean", "base_mean", "win_rate"} <= set(ppo["reward vs base"]["metrics"])
    for kind in ("dpo", "ppo"):
        style = checks_of(report["checkpoints"][kind])["style"]["metrics"]
        assert set(style["model"]) == {"emoji_rate", "as_an_ai_rate", "mean_words", "empty_rate"}
        samples = report["checkpoints"][kind]["generations"]
        assert [s["prompt"] for s in samples] == list(REVIEW_PROMPTS[:SMALL["prompts"]])
        assert all(set(s) == {"prompt", "base", kind} for s in samples)


def test_report_files_are_written(fast_review):
    report, out = fast_review
    saved = json.loads((out / "review.json").read_text())
    assert saved["checkpoints"].keys() == {"dpo", "ppo", "reward-model"}
    assert saved["suggested_bonus"] == 1 and saved["bonus_reason"]
    for checkpoint in saved["checkpoints"].values():
        for check in checkpoint["checks"]:
            assert set(check) == {"name", "status", "detail", "metrics"}
            assert check["status"] in ("pass", "warn", "fail")
    markdown = (out / "review.md").read_text()
    assert markdown == render_markdown(report)
    assert "suggested bonus: **1**" in markdown
    for title in ("## DPO:", "## PPO:", "## Reward model:"):
        assert title in markdown
    assert markdown.count("**pass** ·") == report["summary"]["pass"]


# ---------------------------------------------------------------- broken submissions

def test_base_model_submitted_as_dpo_is_flagged_untrained(broken):
    checkpoints, _ = broken
    dpo = checks_of(checkpoints["dpo"])
    assert dpo["differs from base"]["status"] == "fail"
    assert "identical to the base model" in dpo["differs from base"]["detail"]
    assert dpo["implicit reward"]["status"] == "fail"
    assert dpo["generations"]["status"] == "pass"  # it is still reviewed


def test_two_label_reward_model_is_flagged(broken):
    checkpoints, _ = broken
    architecture = checks_of(checkpoints["reward-model"])["architecture"]
    assert architecture["status"] == "fail"
    assert "2 labels" in architecture["detail"] and "num_labels=1" in architecture["detail"]


def test_truncated_weights_give_one_clear_line_and_the_others_are_reviewed(broken):
    checkpoints, report = broken
    ppo = checkpoints["ppo"]
    assert "weights file is corrupted or truncated" in ppo["error"]
    failed = [check for check in ppo["checks"] if check["status"] == "fail"]
    assert [check["name"] for check in failed] == ["loads"] and failed[0]["detail"] == ppo["error"]
    assert len(checkpoints["dpo"]["checks"]) == len(EXPECTED_CHECKS["dpo"])
    assert "ppo: weights file is corrupted or truncated" in report["bonus_reason"]
    assert "weights file is corrupted or truncated" in render_markdown(report)


def test_card_without_metadata_is_reported(broken):
    checkpoints, report = broken
    card = checks_of(checkpoints["dpo"])["model card"]
    assert card["status"] == "warn"
    assert "base_model in the metadata" in card["detail"] and "datasets in the metadata" in card["detail"]
    assert card["metrics"]["present"] and not card["metrics"]["complete"]
    assert report["suggested_bonus"] == 0


def test_card_without_metadata_alone_costs_the_bonus(fast_run, fixtures):
    reviewer = Reviewer(normalise(fixtures.tiny), str(fixtures.preferences), pairs=1, prompts=0,
                           max_new_tokens=1, expect="smoke", progress=False)
    bare = ModelCard("# DPO model\n\nFine-tuned with DPO.\n\n## Evaluation\n\n| accuracy | 0.9 |\n")

    def bonus(dpo_card: ModelCard) -> tuple[int, str]:
        reviews = {}
        for kind in KINDS:
            reviews[kind] = CheckpointReview(kind, str(fast_run / kind))
            card = dpo_card if kind == "dpo" else ModelCard.load(fast_run / kind / "README.md")
            reviewer.check_card(reviews[kind], card, None)
        return suggest_bonus(reviews)

    assert bonus(ModelCard.load(fast_run / "dpo" / "README.md"))[0] == 1
    points, reason = bonus(bare)
    assert points == 0
    assert "dpo card" in reason and "base_model" in reason and "ppo" not in reason


# ---------------------------------------------------------------- the command line and Hub errors

def test_missing_repositories_offline_give_one_line_each(fixtures, tmp_path, capsys):
    """Hub ids with the Hub offline: the reviewer's problem (incomplete, no bonus suggested, exit code 3), while a
    missing local folder is the student's (fail)."""
    missing_folder = tmp_path / "no-such-reward-model"
    code = main(["review", "nobody-xyz/llm-course-hw2", "--reward-model", str(missing_folder), "--base",
                 str(fixtures.tiny), "--dataset", str(fixtures.preferences), "--pairs", "2", "--prompts", "1",
                 "--max-new-tokens", "4", "--out", str(tmp_path / "review"), "--no-progress"])
    assert code == EXIT_INCOMPLETE
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "review" / "review.json").read_text())
    for kind in ("dpo", "ppo"):
        checkpoint = report["checkpoints"][kind]
        assert checkpoint["source"] == f"nobody-xyz/llm-course-hw2-{kind}"
        assert "not in the local cache and the Hub cannot be reached" in checkpoint["error"]
        assert [check["status"] for check in checkpoint["checks"]] == ["incomplete"]
    assert report["checkpoints"]["reward-model"]["error"] == f"no such folder {str(missing_folder)!r}"
    assert [c["status"] for c in report["checkpoints"]["reward-model"]["checks"]] == ["fail"]
    for checkpoint in report["checkpoints"].values():
        assert [check["name"] for check in checkpoint["checks"]] == ["loads"]
        assert checkpoint["error"] in printed
    assert report["status"] == "incomplete" and report["suggested_bonus"] is None
    assert report["hub"] == "not contacted (HF_HUB_OFFLINE=1)"
    assert report["summary"]["fail"] == 1 and report["summary"]["incomplete"] == 2
    assert "# Review of `nobody-xyz/llm-course-hw2`" in printed
    assert "**Review incomplete**" in printed and "suggested bonus: **none**" in printed
    assert "review incomplete (exit code 3)" in printed


@pytest.mark.parametrize("argv", [["review"], ["review", "x/llm-course-hw2", "--pairs", "0"],
                                  ["review", "x/llm-course-hw2", "--expect", "perfect"]])
def test_usage_errors_exit_with_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2


def hub_error(cls, message: str):
    """A huggingface_hub HTTP error without an HTTP response (its constructor wants one)."""
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    return error


def wrapped(cause: BaseException, message: str) -> OSError:
    try:
        raise OSError(message) from cause
    except OSError as error:
        return error


@pytest.mark.parametrize("error, expected", [
    (wrapped(hub_error(hub_errors.RepositoryNotFoundError, "404"), "x is not a local folder and is not a valid model "
     "identifier listed on 'https://huggingface.co/models'"),
     "repository not found (or private: give --token or set HF_TOKEN)"),
    (wrapped(hub_error(hub_errors.GatedRepoError, "403"), "You are trying to access a gated repo."),
     "gated repository"),
    (wrapped(hub_errors.LocalEntryNotFoundError("no cache"), "We couldn't connect to 'https://huggingface.co'"),
     "the Hub cannot be reached"),
    (RuntimeError("Error while deserializing header: incomplete metadata, file not fully covered"),
     "weights file is corrupted or truncated"),
])
def test_load_errors_are_explained_in_one_line(error, expected):
    message, _ = explain_load_error(error, "student/llm-course-hw2-dpo")
    assert expected in message and "\n" not in message


def test_sources_come_from_a_hub_prefix_or_a_folder(tmp_path):
    assert resolve_sources("me/llm-course-hw2")["reward-model"] == "me/llm-course-hw2-reward-model"
    assert resolve_sources(tmp_path, ppo="other/ppo") == {
        "dpo": str(tmp_path / "dpo"), "ppo": "other/ppo", "reward-model": str(tmp_path / "reward-model")}
    assert resolve_sources(None, dpo="me/x")["ppo"] is None


def test_style_figures_and_card_parsing():
    style = style_figures(["I love it! 😊", "As an AI language model, I cannot.", ""])
    assert style["emoji_rate"] == pytest.approx(1 / 3) and style["as_an_ai_rate"] == pytest.approx(1 / 3)
    assert style["empty_rate"] == pytest.approx(1 / 3)
    assert beta_from_card("| hyper-parameter | value |\n| --- | --- |\n| beta | 0.25 |\n") == 0.25
    assert beta_from_card("We used beta = 0.5.") == 0.5
    assert beta_from_card("no hyper-parameters") is None
    assert card_metrics_in_body("# Model\n\n## Evaluation\n\n| accuracy | 0.93 |\n")
    assert not card_metrics_in_body("# Model\n\nA fine model.\n")


# ---------------------------------------------------------------- offline, without --base (issue 17)

@pytest.fixture
def no_network(monkeypatch):
    """The Hub's offline mode off (as on a reviewer's machine) and every internet connection refused and recorded:
    a review that needs none attempts none."""
    import socket

    attempts = []
    connect = socket.socket.connect

    def refuse(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(address)
            raise OSError(f"the test forbids connecting to {address}")
        return connect(self, address)

    def no_lookup(host, *args, **kwargs):
        attempts.append(host)
        raise socket.gaierror(f"the test forbids looking up {host}")

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", no_lookup)
    return attempts


@pytest.fixture(scope="module")
def local_submission(fixtures, tmp_path_factory):
    """A submission folder as the notebook saves it, made from the tiny model: dpo/, ppo/ and reward-model/ with
    model cards whose metadata name the tiny model as base_model (the reviewer is not told it)."""
    root = tmp_path_factory.mktemp("submission")
    card = (f"---\nbase_model: {fixtures.tiny}\ndatasets:\n- preferences\n---\n# Model\n\n## Evaluation\n\n"
            "| accuracy | 0.9 |\n\nhyper-parameters: learning_rate 1e-5; sample generations below.\n")
    for kind in ("dpo", "ppo"):
        shutil.copytree(fixtures.tiny, root / kind)
        (root / kind / "README.md").write_text(card)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(fixtures.tiny, num_labels=1)
    model.config.pad_token_id = 0
    model.save_pretrained(root / "reward-model")
    AutoTokenizer.from_pretrained(fixtures.tiny).save_pretrained(root / "reward-model")
    (root / "reward-model" / "README.md").write_text(card)
    return root


def test_local_folder_without_base_reads_the_card_and_never_contacts_the_hub(local_submission, fixtures, no_network):
    report = review(local_submission, dataset=fixtures.preferences, expect="smoke", **SMALL)
    assert no_network == []
    assert hub_constants.HF_HUB_OFFLINE is False  # the review's offline mode is undone afterwards
    assert report["base_model"] == normalise(fixtures.tiny) and report["base_from"] == "the dpo model card"
    assert report["hub"].startswith("not contacted") and report["status"] == "complete", report["incomplete"]
    assert report["problems"] == []
    for checkpoint in report["checkpoints"].values():
        assert checkpoint["error"] is None, checkpoint["error"]
        assert checks_of(checkpoint)["loads"]["status"] == "pass"
    assert report["suggested_bonus"] is not None


def test_report_counts_the_review_and_held_out_prompts_it_answered(local_submission, fixtures, no_network):
    report = review(local_submission, base=fixtures.tiny, dataset=fixtures.preferences, expect="smoke", **SMALL)
    held_out = report["settings"]["held_out_prompts"]
    assert report["settings"]["prompts"] == SMALL["prompts"] and 0 < held_out <= SMALL["pairs"]
    answers = SMALL["prompts"] + held_out
    markdown = render_markdown(report)
    assert f"to {SMALL['prompts']} review prompts and {held_out} held-out prompts" in markdown
    for kind in ("dpo", "ppo"):
        generations = checks_of(report["checkpoints"][kind])["generations"]
        assert generations["metrics"]["prompts"] == answers
        assert generations["detail"].startswith(
            f"{answers} greedy answers ({SMALL['prompts']} review prompts, {held_out} held-out prompts)")
        assert len(report["checkpoints"][kind]["generations"]) == SMALL["prompts"]  # samples shown: review prompts


def test_base_model_comes_from_the_card_else_the_config(tmp_path, fixtures):
    folder = tmp_path / "dpo"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_name_or_path": str(fixtures.tiny)}))
    assert base_from_checkpoints({"dpo": str(folder)}) == (str(fixtures.tiny), "the dpo config")
    (folder / "README.md").write_text("---\nbase_model: HuggingFaceTB/SmolLM-135M-Instruct\n---\n# DPO\n")
    assert base_from_checkpoints({"dpo": str(folder)}) == ("HuggingFaceTB/SmolLM-135M-Instruct", "the dpo model card")
    (folder / "README.md").write_text("---\nbase_model: /content/no/such/folder\n---\n")  # a student's Colab path
    assert base_from_checkpoints({"dpo": str(folder)}) == (str(fixtures.tiny), "the dpo config")
    # A Hub checkpoint's card is not read offline.
    assert base_from_checkpoints({"dpo": "me/llm-course-hw2-dpo"}, offline=True) == (None, None)


def test_unreachable_hub_is_the_reviewers_problem_and_is_not_retried(fixtures, tmp_path, no_network, capsys):
    """The Hub does not answer: one probe, then no request at all; the checkpoints are incomplete, not failed."""
    code = main(["review", "student/llm-course-hw2", "--base", str(fixtures.tiny), "--dataset",
                 str(fixtures.preferences), "--pairs", "2", "--prompts", "1", "--max-new-tokens", "4",
                 "--out", str(tmp_path), "--no-progress"])
    assert 1 <= len(no_network) <= 2  # the probe's one lookup or connection, no retries, nothing after it
    assert code == EXIT_INCOMPLETE
    report = json.loads((tmp_path / "review.json").read_text())
    assert report["hub"].startswith("could not reach the Hub")
    assert report["status"] == "incomplete" and report["suggested_bonus"] is None
    assert report["summary"]["fail"] == 0 and report["summary"]["incomplete"] == 3
    assert any("retry later" in reason and "--token" in reason for reason in report["incomplete"])
    assert "review incomplete" in capsys.readouterr().out


def test_probe_reports_an_unreachable_hub_without_retrying(no_network):
    problem = probe_hub(timeout=1)
    assert problem is not None and problem.startswith("could not reach the Hub")
    assert 1 <= len(no_network) <= 2


def test_token_goes_to_hub_loads_only(fixtures):
    loader = Loader(str(fixtures.tiny), str(fixtures.preferences), 1, 0, 1, "smoke", False, token="hf_x",
                    offline=False)
    assert loader.hub_kwargs("me/llm-course-hw2-dpo") == {"token": "hf_x"}
    assert loader.hub_kwargs(str(fixtures.tiny)) == {}
    loader.hub_unreachable = True
    assert loader.hub_kwargs("me/llm-course-hw2-dpo") == {"token": "hf_x", "local_files_only": True}


# ---------------------------------------------------------------- degenerate answers (issue 17)

REPEATING = "I love rainy days because they are cozy. " * 6
ORDINARY = ("Rainy days are lovely! I like to curl up with a good book and a cup of tea, listen to the rain on "
            "the window and maybe watch a movie later in the evening. What about you? 😊")


def test_repetition_is_measured_on_real_text():
    assert repetition_ratio(REPEATING) > 0.7 and is_degenerate(REPEATING)
    assert repetition_ratio(ORDINARY) == 0 and not is_degenerate(ORDINARY)
    assert not is_degenerate("Yes yes yes yes.")  # too short to judge
    assert is_degenerate("The best way to spend a lazy Sunday. " * 3)


def test_an_answer_repeating_one_sentence_fails_the_generations_check(fixtures, monkeypatch):
    """A PPO policy whose answers repeat one sentence: the generations check names the answer."""
    from autograder.review import verdicts
    from transformers import AutoModelForCausalLM

    reviewer = Reviewer(normalise(fixtures.tiny), str(fixtures.preferences), pairs=1, prompts=2, max_new_tokens=64,
                        expect="trained", progress=False)
    texts = {REVIEW_PROMPTS[0]: ORDINARY, REVIEW_PROMPTS[1]: REPEATING}
    monkeypatch.setattr(verdicts, "generate_answers", lambda model, tokenizer, prompts, *args: [
        {"prompt_ids": [1], "answer_ids": [2], "text": texts[prompt]} for prompt in prompts])
    model = AutoModelForCausalLM.from_pretrained(fixtures.tiny)
    result = CheckpointReview("ppo", "ppo")
    reviewer.check_generations(result, model, AutoTokenizer.from_pretrained(fixtures.tiny))
    generations = checks_of({"checks": [vars(check) for check in result.checks]})["generations"]
    assert generations["status"] == "warn"
    assert "repeat themselves" in generations["detail"] and REVIEW_PROMPTS[1] in generations["detail"]
    assert generations["metrics"]["repeating"] == [REVIEW_PROMPTS[1]]
    texts[REVIEW_PROMPTS[0]] = REPEATING  # most answers repeat: fail
    result = CheckpointReview("ppo", "ppo")
    reviewer.check_generations(result, model, AutoTokenizer.from_pretrained(fixtures.tiny))
    assert result.checks[0].status == "fail"


def test_local_folder_naming_an_uncached_hub_base_asks_for_base_without_contacting_the_hub(fixtures, tmp_path,
                                                                                        no_network):
    for kind in ("dpo", "ppo"):
        shutil.copytree(fixtures.tiny, tmp_path / kind)
        (tmp_path / kind / "README.md").write_text("---\nbase_model: nobody-xyz/no-such-base-model\n---\n# DPO\n")
    report = review(tmp_path, pairs=2, prompts=1, max_new_tokens=4, progress=False)
    assert no_network == []
    assert report["base_model"] == "nobody-xyz/no-such-base-model" and report["base_from"] == "the dpo model card"
    assert report["status"] == "incomplete"
    assert any("give --base a local folder" in reason for reason in report["incomplete"])
    assert any("give --dataset a local folder" in reason for reason in report["incomplete"])
