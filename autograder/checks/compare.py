"""Comparisons the checks share: student outputs converted and compared with expected values, gradients element by
element, with feedback that says how they differ."""
import math

import torch

from autograder.checks.framework import CheckFailure, shorten


def gradient_report(seen, expected: torch.Tensor, rtol: float = 1e-3, atol_fraction: float = 1e-4) -> str | None:
    """None when `seen` matches `expected` element by element, else what differs (norm ratio and cosine).

    The absolute tolerance is a fraction of the largest expected magnitude, so tiny float32 rounding
    differences between two correct computations pass while a missing or scaled path does not.
    """
    if seen is None:
        return "no gradient at all" if bool(expected.abs().sum() > 0) else None
    if not isinstance(seen, torch.Tensor):
        return f"a {type(seen).__name__} instead of a gradient tensor"
    if tuple(seen.shape) != tuple(expected.shape):
        return f"a gradient of shape {tuple(seen.shape)} instead of {tuple(expected.shape)}"
    # float32 against float32 stays float32 (its rounding is far below rtol); anything else compares in float64
    dtype = torch.promote_types(seen.dtype, expected.dtype) if seen.is_floating_point() else torch.float64
    dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float64
    seen, expected = seen.to(dtype), expected.to(dtype)
    if not bool(torch.isfinite(seen).all()):
        return "a gradient with inf or nan values"
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    if torch.allclose(seen, expected, rtol=rtol, atol=max(scale * atol_fraction, 1e-12)):
        return None
    seen, expected = seen.double(), expected.double()  # a failure: the report's numbers in float64
    norm_seen, norm_expected = float(seen.norm()), float(expected.norm())
    if norm_expected == 0.0:
        return f"a non-zero gradient (norm {norm_seen:.3g}) where none is expected"
    if norm_seen == 0.0:
        return f"a zero gradient where its norm should be {norm_expected:.3g}"
    cosine = float((seen.flatten() @ expected.flatten()) / (norm_seen * norm_expected))
    return f"norm {norm_seen / norm_expected:.3g} x the expected one, cosine {cosine:.3f} with it"


def expect_gradient(case: str, what: str, seen, expected: torch.Tensor, hint: str, **tolerances) -> None:
    """CheckFailure naming `what` (the input whose gradient this is) unless the gradients agree."""
    report = gradient_report(seen, expected, **tolerances)
    if report is not None:
        raise CheckFailure(case, f"the reference gradient of the loss with respect to {what}",
                           f"{report}", hint)


def expect_model_gradients(case: str, what: str, seen: dict | None, expected: dict, hint: str, **tolerances):
    """The same for every parameter of a model (`seen`/`expected`: parameter name -> gradient or None)."""
    if seen is None:
        raise CheckFailure(case, f"gradients on {what}", "back-propagating from the loss failed", hint)
    differing = []
    for name, reference in expected.items():
        target = reference if reference is not None else torch.zeros(0)
        report = gradient_report(seen.get(name), target, **tolerances) if reference is not None else (
            None if seen.get(name) is None or not bool(seen[name].abs().sum() > 0) else "a gradient where none is expected")
        if report is not None:
            differing.append((name, report))
    if differing:
        name, report = differing[0]
        raise CheckFailure(case, f"the reference gradients on every parameter of {what}",
                           f"{len(differing)} of {len(expected)} parameters differ, e.g. {name}: {report}", hint)


def total_norm(gradients: dict | None) -> float:
    if not gradients:
        return 0.0
    return math.sqrt(sum(float(g.double().pow(2).sum()) for g in gradients.values() if isinstance(g, torch.Tensor)))


# ---------------------------------------------------------------- conversions of student outputs

def int_lists(value, case: str, what: str, mask: bool = False):
    """A (nested) sequence of integers as Python lists (or an int); CheckFailure for anything else.

    Token ids must have an integer dtype (the embedding needs it); a `mask` may also be a float tensor of
    whole numbers (torch.ones/zeros default to float32, and the model accepts such masks).
    """
    if isinstance(value, torch.Tensor):
        if value.is_complex() or (value.is_floating_point() and not (mask and torch.equal(value, value.round()))):
            raise CheckFailure(case, f"{what} holding integers", f"a {value.dtype} tensor",
                               "token ids must have an integer dtype (torch.long)")
        return value.long().tolist()
    if hasattr(value, "tolist") and not isinstance(value, (list, tuple)):  # numpy arrays and scalars
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [int_lists(v, case, what) for v in value]
    if isinstance(value, int):  # bool included
        return int(value)
    raise CheckFailure(case, f"{what} holding integers (a list or tensor of token ids)",
                       f"{type(value).__name__}: {shorten(repr(value), 80)}")


def scalar(value, case: str, what: str) -> float:
    """A Python float from a number, a 0-d tensor or a one-element tensor (detached or not)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise CheckFailure(case, f"{what} as a single number (a scalar)", f"a tensor of shape {tuple(value.shape)}",
                               "average over the batch: the loss and the statistics are one number each")
        return float(value.detach().reshape(()))
    try:
        return float(value)
    except (TypeError, ValueError):
        raise CheckFailure(case, f"{what} as a number", f"{type(value).__name__}: {value!r}") from None


def triple(value, case: str, what: str) -> tuple:
    """The (loss, reward_accuracies, reward_margins) triple."""
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        length = f" of length {len(value)}" if hasattr(value, "__len__") else ""
        raise CheckFailure(case, f"{what} to return a tuple (loss, reward_accuracies, reward_margins)",
                           f"{type(value).__name__}{length}")
    return tuple(value)


def close(seen: float, expected: float, atol: float, rtol: float = 1e-4) -> bool:
    return math.isfinite(seen) and abs(seen - expected) <= atol + rtol * abs(expected)


def difference(name: str, expected, seen) -> tuple[str, str]:
    """Expected/seen descriptions of two (nested) lists that point at their first difference."""
    if expected and isinstance(expected[0], list):
        if not (isinstance(seen, list) and len(seen) == len(expected) and all(isinstance(r, list) for r in seen)):
            return f"{name} with {len(expected)} rows", f"{name} = {shorten_list(seen)}"
        for b, (e, s) in enumerate(zip(expected, seen)):
            if e != s:
                return difference(f"{name}[{b}]", e, s)
        return f"{name} = {shorten_list(expected)}", f"{name} = {shorten_list(seen)}"
    if len(expected) != len(seen):
        return (f"{name} of length {len(expected)}: {shorten_list(expected)}",
                f"length {len(seen)}: {shorten_list(seen)}")
    first = next((i for i, (e, s) in enumerate(zip(expected, seen)) if e != s), 0)
    return (f"{name} = {shorten_list(expected, first)} (first difference at position {first})",
            f"{name} = {shorten_list(seen, first)}")


def shorten_list(values, around: int = 0, width: int = 14) -> str:
    """A long list cut to a window around one position."""
    if not isinstance(values, list) or len(values) <= width + 4:
        return repr(values)
    start = max(0, min(around - 4, len(values) - width))
    stop = start + width
    inner = ", ".join(repr(v) for v in values[start:stop])
    return ("[" if start == 0 else f"[... {start} values ..., ") + inner + ("]" if stop >= len(values) else ", ...]")


def fmt(values) -> str:
    if isinstance(values, (list, tuple)):
        return "[" + ", ".join(fmt(v) for v in values) + "]"
    return f"{values:.5g}" if isinstance(values, float) else repr(values)
