"""`python -m autograder demo`: run the solution notebook end to end, offline, on the real SmolLM2 fixture."""
import argparse
import json
import time
from pathlib import Path

from autograder.fixtures.build import build_fixtures
from autograder.layout import REPO_ROOT, SOURCE_NOTEBOOK
from autograder.notebook.execute import execute_notebook, offline_env
from autograder.review import review


def ppo_summary(ppo: dict) -> str:
    """One line on whether PPO learned: mean score of the first and last quarter of the updates, final KL."""
    if "first_quarter_score" not in ppo:
        return "PPO summary: no per-update scores in metrics.json"
    change = ppo["last_quarter_score"] - ppo["first_quarter_score"]
    return (f"PPO summary: mean score (after the missing-EOS penalty) {ppo['first_quarter_score']:.3f} in the first "
            f"quarter of the {ppo['updates']} updates, {ppo['last_quarter_score']:.3f} in the last quarter "
            f"({change:+.3f}); KL to the reference at the end {ppo['final_kl']:.2f} nats per answer")


def run(args: argparse.Namespace) -> int:
    fixtures = build_fixtures()
    out = args.out.resolve()
    executed = out / "hw2_dpo_ppo.executed.ipynb"
    print(f"Running {SOURCE_NOTEBOOK.relative_to(REPO_ROOT)} with the {args.profile!r} profile on "
          f"{fixtures.smollm2 if args.profile != 'fast' else fixtures.tiny}; outputs in {out}")
    start = time.perf_counter()
    execute_notebook(SOURCE_NOTEBOOK, executed, offline_env(fixtures, out, args.profile))
    print(f"\nDone in {time.perf_counter() - start:.0f} s. Executed notebook: {executed}")
    for name in ("dpo", "ppo", "reward-model"):
        if (out / name).is_dir():
            print(f"checkpoint: {out / name}")
    for plot in sorted((out / "plots").glob("*.png")):
        print(f"plot: {plot}")
    metrics = out / "metrics.json"
    if metrics.exists():
        values = json.loads(metrics.read_text())
        print(json.dumps({name: ({k: v for k, v in value.items() if k != "per_update"} if name == "ppo" else value)
                          for name, value in values.items()}, indent=2))
        print(ppo_summary(values.get("ppo", {})))
    print("\nReviewing the saved checkpoints as a reviewer would (python -m autograder review):")
    base = fixtures.tiny if args.profile == "fast" else fixtures.smollm2
    review(out, base=base, dataset=fixtures.preferences, expect="smoke" if args.profile == "fast" else "trained",
           pairs=8, prompts=2, max_new_tokens=32, out=out / "review", echo=True)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the solution notebook offline on the real SmolLM2 fixture")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "demo-outputs", help="output folder")
    parser.add_argument("--profile", choices=("demo", "fast"), default="demo",
                        help="demo: a short run on SmolLM2 that still learns; fast: a smoke test on the tiny model")
    parser.set_defaults(func=run)
