"""Hidden check of the starred f-DPO task (extra credit): `test_f_dpo_loss`.

The references are written differently from the notebook's solution: f'(u) straight from the table of Wang
et al. (2023) in terms of the ratio u with the `math` module (valid for the moderate log-ratios where they are
used), per-pair Python loops, and the gradients differentiated by hand (f'' and the loss's derivative).
Gradients are computed where the student's code runs (`with_grads`) and compared element by element.
"""
import math

import torch

from autograder.checks import reference as ref
from autograder.checks.compare import close, expect_gradient, fmt, scalar, triple
from autograder.checks.framework import Check, CheckFailure, StudentError, salted, student






DIVERGENCES = ("reverse_kl", "forward_kl", "js", "alpha")
LOSS_TYPES = ("sigmoid", "hinge", "ipo")
MAX_EXPONENT = 30.0  # the notebook's F_DPO_MAX_EXPONENT


# ================================================================ references

def f_prime(divergence: str, log_ratio: float, alpha: float) -> float:
    """f'(u) of the f-DPO paper's table at u = exp(log_ratio), constants included (they cancel)."""
    u = math.exp(log_ratio)
    if divergence == "reverse_kl":
        return math.log(u) + 1.0
    if divergence == "forward_kl":
        return -1.0 / u
    if divergence == "js":
        return math.log(2.0 * u / (1.0 + u))
    if divergence == "alpha":
        return (1.0 - u ** -alpha) / alpha
    raise ValueError(divergence)


def pair_loss(loss_type: str, h: float, beta: float) -> float:
    if loss_type == "sigmoid":
        return ref.softplus(-beta * h)
    if loss_type == "hinge":
        return max(0.0, 1.0 - beta * h)
    if loss_type == "ipo":
        return (h - 1.0 / (2.0 * beta)) ** 2
    raise ValueError(loss_type)


def f_dpo_numbers(values, beta: float, divergence: str, alpha: float, loss_type: str) -> dict:
    """Loss, accuracy and margin of f-DPO, pair by pair in float64."""
    chosen, rejected, ref_chosen, ref_rejected = values
    hs = [f_prime(divergence, c - rc, alpha) - f_prime(divergence, r - rr, alpha)
          for c, r, rc, rr in zip(chosen, rejected, ref_chosen, ref_rejected)]
    n = len(hs)
    return {
        "h": hs,
        "loss": sum(pair_loss(loss_type, h, beta) for h in hs) / n,
        "accuracy": sum(1 for h in hs if h > 0) / n,
        "margin": sum(beta * h for h in hs) / n,
    }


def f_second(divergence: str, log_ratio: float, alpha: float) -> float:
    """d f'(e^t) / dt: how a pair's f' moves with its log-ratio t."""
    if divergence == "reverse_kl":
        return 1.0
    if divergence == "forward_kl":
        return math.exp(-log_ratio)
    if divergence == "js":
        return 1.0 / (1.0 + math.exp(log_ratio))
    if divergence == "alpha":
        return math.exp(-alpha * log_ratio)
    raise ValueError(divergence)


def pair_loss_slope(loss_type: str, h: float, beta: float) -> float:
    """d pair_loss / dh."""
    if loss_type == "sigmoid":
        return -beta / (1.0 + math.exp(beta * h))
    if loss_type == "hinge":
        return -beta if 1.0 - beta * h > 0 else 0.0
    if loss_type == "ipo":
        return 2.0 * (h - 1.0 / (2.0 * beta))
    raise ValueError(loss_type)


def f_dpo_gradients(values, beta, divergence, alpha, loss_type) -> list[torch.Tensor]:
    """d loss / d (chosen, rejected, ref_chosen, ref_rejected) log-probs, differentiated by hand in float64.

    h_i = f'(t_w) - f'(t_l) with t_w = chosen - ref_chosen, t_l = rejected - ref_rejected, and the loss is the
    mean of pair_loss(h_i): d loss / d chosen_i = pair_loss'(h_i) f''(t_w) / n, the rejected side with a minus
    sign, each reference with the opposite sign of its answer.
    """
    chosen, rejected, ref_chosen, ref_rejected = values
    n = len(chosen)
    grads = [[], [], [], []]
    for c, r, rc, rr in zip(chosen, rejected, ref_chosen, ref_rejected):
        t_w, t_l = c - rc, r - rr
        h = f_prime(divergence, t_w, alpha) - f_prime(divergence, t_l, alpha)
        slope = pair_loss_slope(loss_type, h, beta) / n
        d_chosen, d_rejected = slope * f_second(divergence, t_w, alpha), -slope * f_second(divergence, t_l, alpha)
        for index, value in enumerate((d_chosen, d_rejected, -d_chosen, -d_rejected)):
            grads[index].append(value)
    return [torch.tensor(g, dtype=torch.float64) for g in grads]


# ================================================================ test_f_dpo_loss

f_dpo_check = Check("test_f_dpo_loss", 1, ("f_dpo_loss",), extra_credit=True)

# log-ratios t_w = [1, -1, 0, 2] and t_l = [-2, 0, -0.5, -1]: no tie, margins of both signs
HAND_VALUES = ([-4.0, -6.0, -5.0, -10.0], [-7.0, -5.0, -5.5, -9.0], [-5.0, -5.0, -5.0, -12.0],
               [-5.0, -5.0, -5.0, -8.0])
# t_w = [0, 1, 0, 0], t_l = [0, -3, 0, 0]: three exact ties and one pair ranked right
TIE_VALUES = ([-2.0, -1.0, -3.0, -4.0], [-2.0, -5.0, -3.0, -4.0], [-2.0, -2.0, -3.0, -4.0], [-2.0, -2.0, -3.0, -4.0])
# log-ratios of +-1e4 against references at 0: u = e^t overflows, f' of forward KL and alpha is unbounded
EXTREME_VALUES = ([-1e4, 0.0, 1e4, -1e4], [1e4, -1e4, 0.0, -1e4], [0.0] * 4, [0.0] * 4)
F_PRIME_HINT = {
    "forward_kl": "f'(u) = -1/u = -exp(-t) with t = logps - ref_logps",
    "js": "f'(u) = log(2u / (1 + u)) = log 2 + logsigmoid(t) with t = logps - ref_logps",
    "alpha": "f'(u) = (1 - u^-alpha) / alpha = (1 - exp(-alpha * t)) / alpha with t = logps - ref_logps",
}


def f_dpo_by_student(ns, case, values, requires_grad=False, **kwargs):
    tensors = [torch.tensor(v, dtype=torch.float32, requires_grad=requires_grad) for v in values]
    out = triple(student(ns, "f_dpo_loss")(*tensors, **kwargs), case, "f_dpo_loss")
    return tensors, out


def expect_f_dpo(case, values, seen, hint, beta, divergence="reverse_kl", alpha=0.5, loss_type="sigmoid"):
    numbers = f_dpo_numbers(values, beta, divergence, alpha, loss_type)
    loss, accuracy, margin = (scalar(v, case, name) for v, name in zip(seen, ("loss", "accuracy", "margin")))
    setting = f"divergence={divergence!r}, loss_type={loss_type!r}, beta={beta}" + (
        f", alpha={alpha}" if divergence == "alpha" else "")
    if not (close(loss, numbers["loss"], 1e-5) and close(accuracy, numbers["accuracy"], 1e-6)
            and close(margin, numbers["margin"], 1e-5)):
        raise CheckFailure(
            case, f"loss {numbers['loss']:.5f}, accuracy {numbers['accuracy']:.4g}, margin {numbers['margin']:.5f} "
                  f"({setting}; h = f'(u_w) - f'(u_l) = {fmt(numbers['h'])})",
            f"loss {loss:.5f}, accuracy {accuracy:.4g}, margin {margin:.5f}", hint)


@f_dpo_check.case("returns (loss, accuracy, margin) with a scalar loss that carries gradients", weight=1)
def _(ns, ctx):
    case = "return values"
    for divergence in DIVERGENCES:
        _, (loss, accuracy, margin) = f_dpo_by_student(ns, case, HAND_VALUES, requires_grad=True, beta=0.1,
                                                       divergence=divergence)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not loss.requires_grad:
            raise CheckFailure(case, f"divergence={divergence!r}: the loss as a one-number tensor with gradients",
                               repr(loss)[:100], "average over the batch with torch operations (no .item())")
        scalar(accuracy, case, "reward_accuracies")
        scalar(margin, case, "reward_margins")


@f_dpo_check.case("reverse KL with the sigmoid loss (the defaults) is DPO", weight=2)
def _(ns, ctx):
    case = "reverse KL is DPO"
    for beta in (0.5, 0.05):
        for kwargs in ({"divergence": "reverse_kl", "loss_type": "sigmoid"}, {}):
            _, seen = f_dpo_by_student(ns, case, HAND_VALUES, beta=beta, **kwargs)
            expect_f_dpo(case, HAND_VALUES, seen, "f'(u) = log u + 1: the constant cancels and the loss is "
                         "dpo_loss; keep the defaults divergence='reverse_kl', loss_type='sigmoid'", beta)


@f_dpo_check.case("forward KL: hand-computed loss, accuracy and margin", weight=1.5)
def _(ns, ctx):
    case = "forward KL"
    for beta in (0.5, 0.1):
        _, seen = f_dpo_by_student(ns, case, HAND_VALUES, beta=beta, divergence="forward_kl")
        expect_f_dpo(case, HAND_VALUES, seen, F_PRIME_HINT["forward_kl"], beta, "forward_kl")


@f_dpo_check.case("Jensen-Shannon: hand-computed loss, accuracy and margin", weight=1.5)
def _(ns, ctx):
    case = "JS"
    for beta in (0.5, 2.0):
        _, seen = f_dpo_by_student(ns, case, HAND_VALUES, beta=beta, divergence="js")
        expect_f_dpo(case, HAND_VALUES, seen, F_PRIME_HINT["js"], beta, "js")


@f_dpo_check.case("alpha-divergence: hand-computed values for two alphas and the default alpha = 0.5", weight=1.5)
def _(ns, ctx):
    case = "alpha-divergence"
    for alpha in (0.3, 0.8):
        _, seen = f_dpo_by_student(ns, case, HAND_VALUES, beta=0.5, divergence="alpha", alpha=alpha)
        expect_f_dpo(case, HAND_VALUES, seen, F_PRIME_HINT["alpha"], 0.5, "alpha", alpha)
    _, seen = f_dpo_by_student(ns, case, HAND_VALUES, beta=0.5, divergence="alpha")
    expect_f_dpo(case, HAND_VALUES, seen, F_PRIME_HINT["alpha"] + "; alpha defaults to 0.5", 0.5, "alpha", 0.5)


@f_dpo_check.case("hinge (SLiC): max(0, 1 - beta * h), for reverse KL and JS", weight=1)
def _(ns, ctx):
    case = "hinge"
    for divergence, beta in (("reverse_kl", 0.5), ("js", 0.5), ("reverse_kl", 0.2)):
        _, seen = f_dpo_by_student(ns, case, HAND_VALUES, beta=beta, divergence=divergence, loss_type="hinge")
        expect_f_dpo(case, HAND_VALUES, seen, "the hinge loss of a pair is max(0, 1 - beta * h) with "
                     "h = f'(u_w) - f'(u_l); the accuracy and margin do not depend on the loss", beta, divergence,
                     loss_type="hinge")


@f_dpo_check.case("IPO: (h - 1 / (2 beta))^2, for reverse KL and forward KL", weight=1)
def _(ns, ctx):
    case = "IPO"
    for divergence, beta in (("reverse_kl", 0.5), ("reverse_kl", 0.1), ("forward_kl", 0.5)):
        _, seen = f_dpo_by_student(ns, case, HAND_VALUES, beta=beta, divergence=divergence, loss_type="ipo")
        expect_f_dpo(case, HAND_VALUES, seen, "IPO regresses h = f'(u_w) - f'(u_l) itself (not beta * h) to the "
                     "target 1 / (2 beta)", beta, divergence, loss_type="ipo")


@f_dpo_check.case("ties count as wrong and the margin is the mean of beta * (f'(u_w) - f'(u_l))", weight=1)
def _(ns, ctx):
    case = "accuracy and margin"
    for divergence in ("forward_kl", "js", "alpha"):
        _, seen = f_dpo_by_student(ns, case, TIE_VALUES, beta=0.3, divergence=divergence)
        expect_f_dpo(case, TIE_VALUES, seen, "three of the four pairs are exact ties (equal rewards), which count "
                     "as wrong: accuracy = mean of r_chosen > r_rejected (strictly), r = beta * f'(u)", 0.3,
                     divergence)


GRADIENT_SETTINGS = [(divergence, loss_type) for divergence in DIVERGENCES for loss_type in LOSS_TYPES]
GRADIENT_HINT = {
    "reverse_kl": "f'(u) = t: d f' / dt = 1",
    "forward_kl": "f'(u) = -exp(-t): d f' / dt = exp(-t)",
    "js": "f'(u) = logsigmoid(t): d f' / dt = sigmoid(-t)",
    "alpha": "f'(u) = (1 - exp(-alpha t)) / alpha: d f' / dt = exp(-alpha t)",
}
LOSS_SLOPE_HINT = {
    "sigmoid": "d/dh -logsigmoid(beta h) = -beta sigmoid(-beta h)",
    "hinge": "d/dh max(0, 1 - beta h) = -beta where 1 - beta h > 0, else 0",
    "ipo": "d/dh (h - 1 / (2 beta))^2 = 2 (h - 1 / (2 beta))",
}


def gradient_values(seed: int) -> tuple[list[float], ...]:
    """Random log-probs around -8 whose log-ratios lie in [-2.5, 2.5]: margins of both signs, some hinge pairs past
    the hinge and some before it, and no exponent anywhere near the cap."""
    generator = torch.Generator().manual_seed(salted(seed))
    ref_chosen, ref_rejected = (-8 + 2 * torch.rand(6, generator=generator, dtype=torch.float64) for _ in range(2))
    t_w, t_l = (5 * torch.rand(6, generator=generator, dtype=torch.float64) - 2.5 for _ in range(2))
    return ((ref_chosen + t_w).tolist(), (ref_rejected + t_l).tolist(), ref_chosen.tolist(), ref_rejected.tolist())


def f_dpo_with_grads(ns, case, values, **kwargs):
    """The student's f_dpo_loss on float32 inputs that require gradients: (loss, accuracy, margin) and the
    gradients of the loss with respect to the four inputs (None when back-propagating failed)."""
    tensors = [torch.tensor(v, dtype=torch.float32, requires_grad=True) for v in values]
    out, grads = student(ns, "f_dpo_loss").with_grads(tensors, kwargs, backward=(0,),
                                                      grads=("arg:0", "arg:1", "arg:2", "arg:3"))
    return triple(out, case, "f_dpo_loss"), grads


@f_dpo_check.case("gradients with respect to the log-probs match the hand-derived ones, for every divergence and loss",
                  weight=1.5)
def _(ns, ctx):
    case = "gradients"
    for seed, beta in ((21, 0.5), (22, 2.0)):
        values = gradient_values(seed)
        for divergence, loss_type in GRADIENT_SETTINGS:
            setting = f"divergence={divergence!r}, loss_type={loss_type!r}, beta={beta}"
            (loss, _, _), grads = f_dpo_with_grads(ns, case, values, beta=beta, divergence=divergence, alpha=0.5,
                                                   loss_type=loss_type)
            if grads is None or not isinstance(loss, torch.Tensor) or not loss.requires_grad:
                raise CheckFailure(case, f"a loss tensor that carries gradients ({setting})", repr(loss)[:80],
                                   "the loss must be a differentiable function of the log-probs: no .item(), "
                                   ".detach() or torch.no_grad() on the way")
            expected = f_dpo_gradients(values, beta, divergence, 0.5, loss_type)
            for index, name in ((0, "chosen_logps"), (1, "rejected_logps")):
                expect_gradient(case, f"{name} ({setting}, log-probs {fmt(values[index])} against the reference's "
                                f"{fmt(values[index + 2])})", grads.get(f"arg:{index}"), expected[index].float(),
                                f"d loss / d logps = (d pair loss / dh) * (d f' / dt) / batch_size with "
                                f"{GRADIENT_HINT[divergence]} and {LOSS_SLOPE_HINT[loss_type]}: every step from the "
                                "log-probs to the loss must be a torch operation on the log-ratio itself",
                                rtol=1e-3, atol_fraction=1e-4)


@f_dpo_check.case("finite losses and gradients at log-ratios of +-1e4, for every divergence and loss", weight=2)
def _(ns, ctx):
    case = "extreme log-ratios"
    for divergence in DIVERGENCES:
        for loss_type in LOSS_TYPES:
            (loss, _, _), grads = f_dpo_with_grads(ns, case, EXTREME_VALUES, beta=0.1, divergence=divergence,
                                                   loss_type=loss_type)
            value = scalar(loss, case, "loss")
            seen = [g for key in ("arg:0", "arg:1") for g in
                    (grads[key].tolist() if grads and isinstance(grads.get(key), torch.Tensor) else [])]
            if not math.isfinite(value) or not all(math.isfinite(g) for g in seen):
                raise CheckFailure(
                    case, f"a finite loss and finite gradients ({divergence}, {loss_type}, log-ratios "
                          f"t_w = {EXTREME_VALUES[0]}, t_l = {EXTREME_VALUES[1]})",
                    f"loss {value}, gradients {fmt(seen)}",
                    "exp(t) overflows and gives inf/nan: write f' with the log-ratio t (-exp(-t), logsigmoid(t), "
                    f"expm1) and cap every argument of exp() at F_DPO_MAX_EXPONENT = {MAX_EXPONENT:g} with a clamp. "
                    "torch.where(cond, safe, exp(...)) is not enough: the branch it drops still overflows, and its "
                    "gradient, 0 * inf, is nan")


def sigmoid_loss_in_log_space(divergence: str, values, beta: float) -> float:
    """The sigmoid loss of reverse KL or JS at any log-ratio, written with softplus only."""
    losses = []
    for c, r, rc, rr in zip(*values):
        t_w, t_l = c - rc, r - rr
        if divergence == "reverse_kl":
            h = t_w - t_l
        else:  # logsigmoid(t) = -softplus(-t)
            h = ref.softplus(-t_l) - ref.softplus(-t_w)
        losses.append(ref.softplus(-beta * h))
    return sum(losses) / len(losses)


@f_dpo_check.case("exact where the loss is representable, saturated where f' is unbounded (log-ratios of 1e4)",
                  weight=1)
def _(ns, ctx):
    case = "values at extreme log-ratios"
    for divergence in ("reverse_kl", "js"):
        expected = sigmoid_loss_in_log_space(divergence, EXTREME_VALUES, 0.1)
        _, (loss, _, _) = f_dpo_by_student(ns, case, EXTREME_VALUES, beta=0.1, divergence=divergence)
        loss = scalar(loss, case, "loss")
        if not close(loss, expected, 1e-3, 1e-5):
            raise CheckFailure(case, f"loss {expected:.4f} ({divergence}, log-ratios t_w = {EXTREME_VALUES[0]}, "
                               f"t_l = {EXTREME_VALUES[1]})", f"loss {loss}",
                               "these values are representable: use F.logsigmoid / softplus, not log(sigmoid(...)) "
                               "or log(2u / (1 + u))")
    for divergence in ("forward_kl", "alpha"):
        for values, wanted, what in (
            (([-1e4], [0.0], [0.0], [0.0]), "large", "the chosen answer became e^10000 times less likely"),
            (([0.0], [-1e4], [0.0], [0.0]), "zero", "the rejected answer became e^10000 times less likely"),
        ):
            _, (loss, _, _) = f_dpo_by_student(ns, case, values, beta=0.1, divergence=divergence)
            loss = scalar(loss, case, "loss")
            right = (loss > 100 and math.isfinite(loss)) if wanted == "large" else (0 <= loss < 1e-6)
            if not right:
                expected = "a large finite loss (> 100)" if wanted == "large" else "a loss of about 0"
                raise CheckFailure(case, f"{expected} ({divergence}: {what})", f"loss {loss}",
                                   "f' = -exp(-t) (or its alpha version) is huge here: the sigmoid saturates. Cap the "
                                   f"exponent at F_DPO_MAX_EXPONENT = {MAX_EXPONENT:g} instead of replacing inf or nan")


@f_dpo_check.case("an unknown divergence or loss_type raises ValueError", weight=0.5)
def _(ns, ctx):
    case = "unknown names"
    function = student(ns, "f_dpo_loss")
    tensors = [torch.tensor(v) for v in HAND_VALUES]
    for kwargs in ({"divergence": "kl"}, {"loss_type": "logistic"}):
        try:
            function(*tensors, **kwargs)
        except StudentError as error:
            type_name = getattr(error.error, "type_name", type(error.error).__name__)
            if type_name == "ValueError":
                continue
            if getattr(error.error, "not_implemented", False) or isinstance(error.error, NotImplementedError):
                raise
            raise CheckFailure(case, f"ValueError for {kwargs}", f"{type_name}: {error.error}",
                               "raise ValueError naming the allowed values") from None
        raise CheckFailure(case, f"ValueError for {kwargs}", "no exception",
                           "check divergence against F_DIVERGENCES and loss_type against F_DPO_LOSS_TYPES")


CHECKS = [f_dpo_check]
