"""The whole solution notebook runs headless in the fast profile on the tiny model, offline."""
import json

import pytest


@pytest.fixture(scope="module")
def fast_run(fast_notebook_run):
    return fast_notebook_run


def test_every_cell_runs_without_error(fast_run):
    _, notebook = fast_run
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors


def test_dpo_checkpoint_is_saved_and_loads(fast_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, _ = fast_run
    model = AutoModelForCausalLM.from_pretrained(out / "dpo")
    assert AutoTokenizer.from_pretrained(out / "dpo").chat_template
    assert model.config.vocab_size > 0


def test_metrics_and_plots_are_written(fast_run):
    out, _ = fast_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dpo"]["reference"]["reward_accuracy"] == pytest.approx(0.5)
    assert 0.0 <= metrics["dpo"]["trained"]["reward_accuracy"] <= 1.0
    assert (out / "plots" / "dpo_training.png").stat().st_size > 0
    assert set(metrics) >= {"dpo", "reward_model", "ppo", "logprob_analysis", "starred"}
    for plot in ("reward_model_accuracy", "ppo_reward", "logprob_histograms", "reward_vs_diversity"):
        assert (out / "plots" / f"{plot}.png").stat().st_size > 0, plot


def test_pushing_is_skipped_in_the_fast_profile(fast_run):
    _, notebook = fast_run
    printed = "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))
    assert "pushing is off" in printed
