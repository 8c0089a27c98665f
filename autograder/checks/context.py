"""What the checks share: the real tokenizer and the tiny model, loaded once, plus the cache of references that
do not depend on the submission (kept for every submission a judge process grades)."""
import os
from collections.abc import Callable
from pathlib import Path

MODEL_DIR_VARIABLE = "HW2_CHECKS_MODEL_DIR"
# (pad, side) of every tokenizer the checks hand to student code (`tokenizer` and `models.make_tokenizer`): a
# sandbox makes its copies of them before the submission arrives (see `resources.preload`)
LENT_TOKENIZERS = ((None, None), ("eos", "left"), ("eos", "right"), ("safe", "left"), ("safe", "right"),
                   ("added", "left"), ("added", "right"))


class CheckContext:
    """Lazily loaded grading resources.

    The model folder is, in order: the `model_dir` argument, `$HW2_CHECKS_MODEL_DIR`, or the tiny fixture
    (`autograder.fixtures.build.fixture_paths().tiny`): a random two-layer Llama with SmolLM2's real tokenizer and
    chat template, whose pad token is the end-of-turn token `<|im_end|>`.
    """

    def __init__(self, model_dir: str | Path | None = None):
        self._model_dir = Path(model_dir) if model_dir is not None else None
        self._tokenizer = None
        self._shared_dir: Path | None = None
        self._cache: dict = {}

    @property
    def model_dir(self) -> Path:
        if self._model_dir is None:
            if os.environ.get(MODEL_DIR_VARIABLE):
                self._model_dir = Path(os.environ[MODEL_DIR_VARIABLE])
            else:
                from autograder.fixtures.build import fixture_paths

                self._model_dir = fixture_paths().tiny
        if not (self._model_dir / "config.json").is_file():
            raise FileNotFoundError(
                f"the grading model {self._model_dir} is missing: build it with `python -m autograder fixtures` "
                f"or point ${MODEL_DIR_VARIABLE} at a folder with a model and its tokenizer"
            )
        return self._model_dir

    @property
    def tokenizer(self):
        """The real SmolLM2 tokenizer (pad token = end-of-turn token)."""
        if self._tokenizer is None:
            from autograder.grading.exercise.resources import tokenizer_from_spec
            from autograder.grading.remote import tag

            spec = self.tokenizer_spec(None, None)
            self._tokenizer = tag(tokenizer_from_spec(spec), spec)
        return self._tokenizer

    def tokenizer_spec(self, pad: str | None, side: str | None) -> dict:
        """The spec of a grading tokenizer (see `autograder.checks.models.tokenizer_spec`); one that the checks
        hand to student code belongs in LENT_TOKENIZERS (else each sandbox copies it when it is first lent)."""
        return {"kind": "tokenizer", "path": str(self.model_dir), "pad": pad, "side": side}

    def preload(self) -> dict:
        """What a sandbox loads before the submission arrives: the grading model and the lent tokenizers."""
        return {"model_dir": str(self.model_dir),
                "tokenizers": [self.tokenizer_spec(pad, side) for pad, side in LENT_TOKENIZERS]}

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    def model_spec(self, requires_grad: bool = False, noise: float = 0.0, seed: int = 0, **extra) -> dict:
        """The spec of a copy of the tiny model (see `autograder.grading.exercise.resources.model_from_spec`)."""
        return {"kind": "model", "path": str(self.model_dir), "auto": "AutoModelForCausalLM", "noise": noise,
                "seed": seed, "requires_grad": requires_grad, **extra}

    def model(self, requires_grad: bool = False, noise: float = 0.0, seed: int = 0):
        """A fresh float32 copy of the tiny model in eval mode, optionally with seeded noise on its weights.

        The model carries its spec: handed to student code, it travels as the spec, and the exercise builds
        the same weights on its side.
        """
        from autograder.grading.exercise.resources import model_from_spec
        from autograder.grading.remote import tag

        spec = self.model_spec(requires_grad, noise, seed)
        return tag(model_from_spec(spec), spec)

    @property
    def shared_dir(self) -> Path:
        """A folder for files that student code must read (checkpoints the checks write once per process).

        The sandbox mounts it read-only at the same path, next to the fixtures.
        """
        if self._shared_dir is None:
            import atexit
            import shutil
            import tempfile

            self._shared_dir = Path(tempfile.mkdtemp(prefix=f"hw2-judge-inputs-{os.getpid()}-"))
            self._shared_dir.chmod(0o755)
            atexit.register(shutil.rmtree, self._shared_dir, True)
        return self._shared_dir

    def cached(self, key, compute: Callable):
        """`compute()` once per context and run salt, for every submission a judge process grades.

        Only for values the judge computes from its own inputs (`key` names them; the salt of the checks'
        random inputs is added to it), never from what student code returned. Each call gets a `fresh` copy,
        so a check that changes what it got cannot change what the next submission is compared with.
        """
        from autograder.checks.framework import salted

        key = (salted(0), key)
        if key not in self._cache:
            self._cache[key] = compute()
        return fresh(self._cache[key])

    def cached_count(self) -> int:
        """How many values `cached` holds: 0 until the first submission of a judge process computes them."""
        return len(self._cache)


def fresh(value):
    """A copy of a cached value that shares nothing mutable with it: new containers, detached tensor clones.

    Other objects (tokenizers, models, paths) come back as they are: the judge only reads them, and student
    code never gets them (they travel to it as specs).
    """
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {key: fresh(item) for key, item in value.items()}
    if isinstance(value, list):
        return [fresh(item) for item in value]
    if isinstance(value, tuple):
        return tuple(fresh(item) for item in value)
    return value


_DEFAULT: CheckContext | None = None


def default_context() -> CheckContext:
    """One context per process, shared by the hidden test cells of a notebook."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = CheckContext()
    return _DEFAULT
