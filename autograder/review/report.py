"""The review as a report: the suggested bonus and the Markdown rendering."""
from autograder.review.findings import FAIL, INCOMPLETE, PASS, STATUSES, WARN, CheckpointReview

TITLES = {"dpo": "DPO", "ppo": "PPO", "reward-model": "Reward model"}
ICONS = {PASS: "✅", WARN: "⚠️", FAIL: "❌", INCOMPLETE: "⏸️"}


def suggest_bonus(reviews: dict[str, CheckpointReview]) -> tuple[int | None, str]:
    """1 when all three checkpoints load and their cards name the base model and dataset and report metrics;
    None (no suggestion) when a checkpoint or card could not be read because the Hub could not be reached."""
    unread = [f"{kind}: {check.detail}" for kind, review in reviews.items() for check in review.checks
              if check.status == INCOMPLETE]
    if unread:
        return None, "not suggested, the review is incomplete (" + "; ".join(unread) + ")"
    problems = []
    for kind, review in reviews.items():
        if review.source is None:
            problems.append(f"{kind}: not reviewed")
            continue
        if review.error:
            problems.append(f"{kind}: {review.error}")
        card = next((check for check in review.checks if check.name == "model card"), None)
        if card is None or not card.metrics.get("complete"):
            problems.append(f"{kind} card: {card.detail if card else 'not checked'}")
    if problems:
        return 0, "; ".join(problems)
    return 1, "all three checkpoints load and their model cards name the base model and the dataset and report " \
              "held-out metrics (check the descriptions by eye)"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def render_markdown(report: dict) -> str:
    """The review as Markdown: a summary, then one line per check and the sample answers of each checkpoint."""
    totals = report["summary"]
    settings = report["settings"]
    counted = f"{totals[PASS]} pass, {totals[WARN]} warn, {totals[FAIL]} fail"
    if totals.get(INCOMPLETE):
        counted += f", {totals[INCOMPLETE]} incomplete"
    bonus = report["suggested_bonus"] if report["suggested_bonus"] is not None else "none"
    lines = [f"# Review of `{report['target'] or 'the given checkpoints'}`", ""]
    if report.get("status") == "incomplete":
        lines += [f"**Review incomplete** (the reviewer's problem, not the student's): "
                  f"{'; '.join(report['incomplete'])}", ""]
    base_from = f" (from {report['base_from']})" if report.get("base_from") else ""
    lines += [f"- base model: `{report['base_model']}`{base_from}",
              f"- held-out pairs: {settings['pairs_used']} from `{report['dataset']}`",
              f"- greedy answers of at most {settings['max_new_tokens']} new tokens to "
              f"{plural(settings['prompts'], 'review prompt')} and "
              f"{plural(settings.get('held_out_prompts', 0), 'held-out prompt')}; expectations: {settings['expect']}",
              f"- Hub: {report.get('hub', 'not recorded')}",
              f"- reviewed in {report['seconds']:.0f} s",
              f"- **{counted}**; suggested bonus: **{bonus}** ({report['bonus_reason']})"]
    for problem in report["problems"]:
        lines.append(f"- ⚠️ {problem}")
    for kind, review in report["checkpoints"].items():
        counts = {status: sum(c["status"] == status for c in review["checks"]) for status in STATUSES}
        source = f"`{review['source']}`" if review["source"] else "(not given)"
        counted = f"{counts[PASS]} pass, {counts[WARN]} warn, {counts[FAIL]} fail"
        if counts[INCOMPLETE]:
            counted += f", {counts[INCOMPLETE]} incomplete"
        lines += ["", f"## {TITLES[kind]}: {source}", "", counted, ""]
        for check in review["checks"]:
            lines.append(f"- {ICONS[check['status']]} **{check['status']}** · {check['name']}: {check['detail']}")
        if review["generations"]:
            lines += ["", "<details><summary>Greedy answers next to the base model's</summary>", ""]
            for sample in review["generations"]:
                lines += [f"**{sample['prompt']}**", ""]
                for who in ("base", kind):
                    answer = sample[who] or "(empty)"
                    lines += [f"*{who}:*", "", "\n".join(f"> {line}" for line in answer.splitlines() or [""]), ""]
            lines.append("</details>")
    return "\n".join(lines) + "\n"
