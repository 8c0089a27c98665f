"""What a review finds: one `Finding` per check of a checkpoint, gathered in a `CheckpointReview`."""
import math
from dataclasses import dataclass, field
from typing import Any

KINDS = ("dpo", "ppo", "reward-model")
PASS, WARN, FAIL = "pass", "warn", "fail"
# Not the student's result but the reviewer's problem: the Hub could not be reached, so this was not reviewed.
INCOMPLETE = "incomplete"
STATUSES = (PASS, WARN, FAIL, INCOMPLETE)


@dataclass
class Finding:
    """The outcome of one review check: its name, pass/warn/fail, one line for the report and the figures."""
    name: str
    status: str
    detail: str
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class CheckpointReview:
    kind: str
    source: str | None
    checks: list[Finding] = field(default_factory=list)
    generations: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None

    def add(self, name: str, status: str, detail: str, **metrics) -> Finding:
        finding = Finding(name, status, detail, {key: plain(value) for key, value in metrics.items()})
        self.checks.append(finding)
        return finding


def plain(value):
    """JSON-friendly numbers: numpy scalars and tensors become Python numbers, floats to 6 significant digits."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float):
        return float(f"{value:.6g}") if math.isfinite(value) else None
    return value
