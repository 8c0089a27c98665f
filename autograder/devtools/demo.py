"""`python -m autograder demo`: run the solution notebook end to end, offline, on the real SmolLM2 fixture."""
import argparse
import json
import time
from pathlib import Path

from autograder.fixtures.build import build_fixtures
from autograder.layout import REPO_ROOT, SOURCE_NOTEBOOK
from autograder.notebook.execute import execute_notebook, offline_env
from autograder.review import review


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
        print(json.dumps(json.loads(metrics.read_text()), indent=2))
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
