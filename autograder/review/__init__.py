"""`python -m autograder review <user>/llm-course-hw2`: review a student's three checkpoints in one command.

    python -m autograder review <user>/llm-course-hw2 [--dpo ID_OR_DIR] [--ppo ID_OR_DIR]
        [--reward-model ID_OR_DIR] [--base ID_OR_DIR] [--dataset ID_OR_DIR] [--token TOKEN] [--pairs N]
        [--prompts N] [--max-new-tokens N] [--expect trained|smoke] [--out DIR]

The target is the prefix of the student's Hub repositories (`<prefix>-dpo`, `<prefix>-ppo`,
`<prefix>-reward-model`, public by default) or a local folder holding `dpo/`, `ppo/` and `reward-model/` (the
notebook's `HW2_OUTPUT_DIR`); `--dpo`, `--ppo` and `--reward-model` name one checkpoint explicitly. Private
repositories need a token that can read them (`--token`, default `$HF_TOKEN`), passed to every Hub request.
Every checkpoint is loaded with the ordinary `from_pretrained`, whether it is a Hub id or a local folder, and
compared with the base model on a fixed set of prompts and on held-out preference pairs (`--dataset`, default
`$HW2_DATASET_ID` or the course dataset: its `test` split, else the notebook's seeded cut of `train`). The base
model is `--base`, else `$HW2_MODEL_ID`, else the `base_model` of the checkpoints' model cards, else the
`_name_or_path` of a local checkpoint's config, else SmolLM-135M-Instruct.

The Hub: a review of local folders only, or under `HF_HUB_OFFLINE=1`, never contacts it (Hub ids then come
from the local cache). Otherwise one probe with a short timeout comes first; when the Hub does not answer, the
review goes on offline without retries, and what could not be read is marked `incomplete`: the reviewer's
problem, not a failure of the student's checkpoint.

Per checkpoint the report has one line per check, pass, warn, fail or incomplete: it loads, has the expected
architecture and a tokenizer with a chat template, differs from the base weights; greedy answers next to the
base model's, their style (emoji rate, "as an AI" rate, length) and whether they repeat themselves; for DPO the
implicit-reward accuracy and margin and the KL drift from the base; for the reward model its pairwise accuracy
and whether its score depends on the answer; for PPO the reward model's score of its answers against the base
model's; and the model card (the bonus task). A checkpoint that cannot be loaded gets one line saying why; the
others are still reviewed.

The Markdown report goes to stdout and, with `--out DIR`, to `DIR/review.md` with `DIR/review.json`. The
exit code is 0 when the review is complete (failed checks included), 3 when it is incomplete (the Hub could not
be reached, or the base model or the held-out pairs could not be loaded; no bonus is suggested then when a
checkpoint could not be read) and 2 on usage errors.

`--expect smoke` is for fast-dev-run checkpoints (a couple of steps on the tiny model): the held-out
accuracies are measured and reported but not judged (the pipeline works; a couple of steps on preferences
with noisy labels need not find the direction yet).
"""
import argparse
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

from tqdm.auto import tqdm

from autograder.review.findings import INCOMPLETE, KINDS, STATUSES
from autograder.review.load import (
    DEFAULT_DATASET_ID,
    DEFAULT_MODEL_ID,
    MAX_HELD_OUT_PROMPTS,
    REVIEW_PROMPTS,
    UNREACHABLE_ADVICE,
    base_from_checkpoints,
    hub_offline,
    hub_settings,
    library_output,
    looks_local,
    normalise,
    probe_hub,
    resolve_sources,
)
from autograder.review.report import render_markdown, suggest_bonus
from autograder.review.verdicts import Reviewer

EXPECTATIONS = ("trained", "smoke")
EXIT_INCOMPLETE = 3  # the review ran but could not read everything (the Hub, the base model or the data)


def review(
    target: str | Path | None = None,
    *,
    dpo: str | Path | None = None,
    ppo: str | Path | None = None,
    reward_model: str | Path | None = None,
    base: str | Path | None = None,
    dataset: str | Path | None = None,
    pairs: int = 64,
    prompts: int = 8,
    max_new_tokens: int = 64,
    expect: str = "trained",
    out: Path | None = None,
    progress: bool = True,
    echo: bool = False,
    token: str | None = None,
) -> dict:
    """Review a student's checkpoints and return the report (see the module docstring).

    Args:
        target: the Hub prefix `<user>/llm-course-hw2` or a folder with `dpo/`, `ppo/`, `reward-model/`.
        dpo, ppo, reward_model: a Hub id or folder for one checkpoint, overriding `target`.
        base: the base model (default `$HW2_MODEL_ID`, else the `base_model` of the checkpoints' model cards or
            their config's `_name_or_path`, else SmolLM-135M-Instruct).
        dataset: the preference dataset of the held-out pairs (default `$HW2_DATASET_ID` or the course's).
        pairs: held-out pairs to evaluate; prompts: review prompts to answer (at most 8);
        max_new_tokens: the length limit of the greedy answers.
        expect: "trained" (course thresholds) or "smoke" (fast-dev-run checkpoints: accuracies reported, not judged).
        out: when given, `review.md` and `review.json` are written there.
        progress: show progress bars (on stderr); echo: print the Markdown report to stdout.
        token: a Hugging Face token that can read the repositories (default `$HF_TOKEN`); never reported.

    Returns:
        The JSON report: target, status ("complete" or "incomplete"), incomplete (why, the reviewer's problems),
        base_model, base_from, dataset, hub ("not contacted", "reachable" or why not), settings, problems (base
        model or data unavailable), checkpoints (per kind: source, error, checks [{name, status, detail,
        metrics}], generations), summary (counts per status), suggested_bonus (0, 1, or None when the review is
        incomplete) and bonus_reason.
    """
    if expect not in EXPECTATIONS:
        raise ValueError(f"expect must be one of {EXPECTATIONS}, got {expect!r}")
    if pairs < 1 or prompts < 0 or max_new_tokens < 1:
        raise ValueError("pairs and max_new_tokens must be positive and prompts not negative")
    sources = resolve_sources(target, dpo, ppo, reward_model)
    if not any(sources.values()):
        raise ValueError("nothing to review: give a target (Hub prefix or folder) or --dpo/--ppo/--reward-model")
    token = token or os.environ.get("HF_TOKEN") or None
    start = time.perf_counter()
    # Local folders only: the Hub is never contacted. Otherwise one short probe; when the Hub does not answer,
    # everything on it comes from the local cache (no retries) and what is not there is reported as incomplete.
    local = all(looks_local(source) for source in sources.values() if source)
    if local or hub_offline():
        offline, hub = True, "not contacted" + (" (local folders)" if local else " (HF_HUB_OFFLINE=1)")
    else:
        problem = probe_hub(token)
        offline, hub = problem is not None, problem or "reachable"
    with hub_settings(offline), library_output(progress):
        base_from = "--base"
        if base is None:
            base, base_from = os.environ.get("HW2_MODEL_ID"), "$HW2_MODEL_ID"
        if not base:
            base, base_from = base_from_checkpoints(sources, token, offline)
        if not base:
            base, base_from = DEFAULT_MODEL_ID, "the default"
        base = normalise(base)
        dataset = normalise(dataset or os.environ.get("HW2_DATASET_ID") or DEFAULT_DATASET_ID)
        reviewer = Reviewer(base, dataset, pairs, min(prompts, len(REVIEW_PROMPTS)), max_new_tokens, expect,
                            progress, token=token, offline=offline)
        reviewer.load_base()
        reviewer.load_pairs()
        reviews = {}
        # The reward model goes first: the PPO check scores answers with it.
        for kind in tqdm(("reward-model", "dpo", "ppo"), desc="reviewing", unit="checkpoint", disable=not progress):
            reviews[kind] = reviewer.review_checkpoint(kind, sources[kind])
        reviewer.reward = reviewer.base_model = None
    reviews = {kind: reviews[kind] for kind in KINDS}
    bonus, reason = suggest_bonus(reviews)
    checks = [check for r in reviews.values() for check in r.checks]
    problems = [problem for problem in (reviewer.base_error, reviewer.pairs_error) if problem]
    incomplete = problems + [f"{kind}: {check.detail}" for kind, r in reviews.items() for check in r.checks
                             if check.status == INCOMPLETE]
    if not hub.startswith(("reachable", "not contacted")):  # the probe found the Hub unreachable
        incomplete.insert(0, f"{hub}: {UNREACHABLE_ADVICE}")
    report = {
        "target": str(target) if target is not None else None,
        "status": "incomplete" if incomplete else "complete",
        "incomplete": incomplete,
        "base_model": base,
        "base_from": base_from,
        "dataset": dataset,
        "hub": hub,
        "settings": {"pairs": pairs, "pairs_used": len(reviewer.pairs), "prompts": len(reviewer.prompts),
                     "held_out_prompts": len(reviewer.pairs[:MAX_HELD_OUT_PROMPTS]),
                     "max_new_tokens": max_new_tokens, "expect": expect},
        "problems": problems,
        "checkpoints": {kind: asdict(r) for kind, r in reviews.items()},
        "summary": {status: sum(c.status == status for c in checks) for status in STATUSES},
        "suggested_bonus": bonus,
        "bonus_reason": reason,
        "seconds": round(time.perf_counter() - start, 1),
    }
    markdown = render_markdown(report)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "review.md").write_text(markdown, encoding="utf-8")
        (out / "review.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if echo:
        print(markdown, flush=True)
    return report


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.target is None and not (args.dpo or args.ppo or args.reward_model):
        parser.error("give the student's Hub prefix (<user>/llm-course-hw2), a local folder, or "
                     "--dpo/--ppo/--reward-model")
    if args.pairs < 1 or args.max_new_tokens < 1 or args.prompts < 0:
        parser.error("--pairs and --max-new-tokens must be at least 1, --prompts at least 0")
    report = review(args.target, dpo=args.dpo, ppo=args.ppo, reward_model=args.reward_model, base=args.base,
                    dataset=args.dataset, pairs=args.pairs, prompts=args.prompts, max_new_tokens=args.max_new_tokens,
                    expect=args.expect, out=args.out, progress=not args.no_progress, echo=True, token=args.token)
    if args.out is not None:
        print(f"report written to {args.out / 'review.md'} and {args.out / 'review.json'}")
    if report["status"] != "complete":
        print(f"review incomplete (exit code {EXIT_INCOMPLETE}): {'; '.join(report['incomplete'])}")
        return EXIT_INCOMPLETE
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "review", help="review a student's DPO, PPO and reward-model checkpoints (Hub or local) and the model cards",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", nargs="?", help="Hub prefix <user>/llm-course-hw2, or a folder holding dpo/, ppo/ "
                                                  "and reward-model/")
    parser.add_argument("--dpo", help="Hub id or folder of the DPO model (default: <target>-dpo)")
    parser.add_argument("--ppo", help="Hub id or folder of the PPO policy (default: <target>-ppo)")
    parser.add_argument("--reward-model", help="Hub id or folder of the reward model (default: <target>-reward-model)")
    parser.add_argument("--base", help=f"base model (default: $HW2_MODEL_ID, else the base_model of the "
                                       f"checkpoints' model cards or their config, else {DEFAULT_MODEL_ID})")
    parser.add_argument("--token", help="Hugging Face token that can read the repositories (default: $HF_TOKEN)")
    parser.add_argument("--dataset", help=f"preference dataset of the held-out pairs (default: $HW2_DATASET_ID or "
                                          f"{DEFAULT_DATASET_ID})")
    parser.add_argument("--pairs", type=int, default=64, help="held-out pairs to evaluate (default 64)")
    parser.add_argument("--prompts", type=int, default=len(REVIEW_PROMPTS),
                        help=f"review prompts to answer, at most {len(REVIEW_PROMPTS)} (default all)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="length limit of the answers (default 64)")
    parser.add_argument("--expect", choices=EXPECTATIONS, default="trained",
                        help="trained: course thresholds; smoke: fast-dev-run checkpoints, accuracies reported, not judged")
    parser.add_argument("--out", type=Path, help="write review.md and review.json to this folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=lambda args: run(args, parser))
