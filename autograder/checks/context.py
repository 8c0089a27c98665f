"""What the checks share: the real tokenizer and the tiny model, loaded once, plus a cache of references."""
import copy
import os
from collections.abc import Callable
from pathlib import Path

MODEL_DIR_VARIABLE = "HW2_CHECKS_MODEL_DIR"


class CheckContext:
    """Lazily loaded grading resources.

    The model folder is, in order: the `model_dir` argument, `$HW2_CHECKS_MODEL_DIR`, or the tiny fixture
    (`autograder.fixtures.fixture_paths().tiny`): a random two-layer Llama with SmolLM2's real tokenizer and
    chat template, whose pad token is the end-of-turn token `<|im_end|>`.
    """

    def __init__(self, model_dir: str | Path | None = None):
        self._model_dir = Path(model_dir) if model_dir is not None else None
        self._tokenizer = None
        self._model = None
        self._cache: dict = {}

    @property
    def model_dir(self) -> Path:
        if self._model_dir is None:
            if os.environ.get(MODEL_DIR_VARIABLE):
                self._model_dir = Path(os.environ[MODEL_DIR_VARIABLE])
            else:
                from autograder.fixtures import fixture_paths

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
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            self._tokenizer = tokenizer
        return self._tokenizer

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    def model(self, requires_grad: bool = False, noise: float = 0.0, seed: int = 0):
        """A fresh float32 copy of the tiny model in eval mode, optionally with seeded noise on its weights."""
        import torch

        if self._model is None:
            from transformers import AutoModelForCausalLM

            base = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=torch.float32)
            base.eval().requires_grad_(False)
            for module in base.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.p = 0.0
            self._model = base
        model = copy.deepcopy(self._model)
        if noise:
            generator = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                for parameter in model.parameters():
                    parameter.add_(noise * torch.randn(parameter.shape, generator=generator))
        return model.requires_grad_(requires_grad)

    def cached(self, key, compute: Callable):
        """`compute()` once per context: reference values do not depend on the student's code."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]


_DEFAULT: CheckContext | None = None


def default_context() -> CheckContext:
    """One context per process, shared by the hidden test cells of a notebook."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = CheckContext()
    return _DEFAULT
