"""The mutation catalogue of the hidden checks: realistic student answers, one module per notebook section.

- `MUTANTS[name] = {"grade_id": answer cell, "source": the cell as a student would write it, "loses": test cell}`:
  a buggy answer, which must lose points on its own test cell and on no other;
- `VARIANTS[name] = {answer cell: source, ...}`: a correct answer written differently (it may replace several
  cells), which must get full marks everywhere.

Each section module (`data_prep`, `dpo_loss`, ..., named like the check modules of `autograder/checks/`)
defines its own `MUTANTS` and `VARIANTS`; a variant that replaces cells of several sections lives in the section
of its first cell. `tests/test_catalogue.py` grades them all; `mutants.catalogue` holds the helpers.
"""
from mutants import analysis, data_prep, dpo_loss, dpo_training, fdpo, lora, ppo, reward_model, win_rate

SECTIONS = {module.__name__.rpartition(".")[2]: module for module in (
    data_prep, dpo_loss, dpo_training, reward_model, ppo, analysis, fdpo, win_rate, lora)}


def _collect(attribute: str) -> dict:
    collected = {}
    for module in SECTIONS.values():
        entries = getattr(module, attribute)
        clashes = set(entries) & set(collected)
        if clashes:
            raise ValueError(f"{module.__name__}.{attribute}: names already used by another section: {sorted(clashes)}")
        collected.update(entries)
    return collected


MUTANTS: dict[str, dict] = _collect("MUTANTS")
VARIANTS: dict[str, dict[str, str]] = _collect("VARIANTS")
