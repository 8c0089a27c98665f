"""Comparisons the checks share: gradients element by element, with feedback that says how they differ."""
import math

import torch

from autograder.checks.framework import CheckFailure


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
    seen, expected = seen.double(), expected.double()
    if not bool(torch.isfinite(seen).all()):
        return "a gradient with inf or nan values"
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    if torch.allclose(seen, expected, rtol=rtol, atol=max(scale * atol_fraction, 1e-12)):
        return None
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
