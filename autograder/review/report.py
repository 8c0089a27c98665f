"""The review as a report: the suggested bonus and the Markdown rendering."""
from autograder.review.findings import FAIL, PASS, WARN, CheckpointReview

TITLES = {"dpo": "DPO", "ppo": "PPO", "reward-model": "Reward model"}
ICONS = {PASS: "✅", WARN: "⚠️", FAIL: "❌"}


def suggest_bonus(reviews: dict[str, CheckpointReview]) -> tuple[int, str]:
    """1 when all three checkpoints load and their cards name the base model and dataset and report metrics."""
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
    lines = [f"# Review of `{report['target'] or 'the given checkpoints'}`", "",
             f"- base model: `{report['base_model']}`",
             f"- held-out pairs: {report['settings']['pairs_used']} from `{report['dataset']}`",
             f"- {plural(report['settings']['prompts'], 'review prompt')}, greedy answers of at most "
             f"{report['settings']['max_new_tokens']} new tokens; expectations: {report['settings']['expect']}",
             f"- reviewed in {report['seconds']:.0f} s",
             f"- **{totals[PASS]} pass, {totals[WARN]} warn, {totals[FAIL]} fail**; suggested bonus: "
             f"**{report['suggested_bonus']}** ({report['bonus_reason']})"]
    for problem in report["problems"]:
        lines.append(f"- ⚠️ {problem}")
    for kind, review in report["checkpoints"].items():
        counts = {status: sum(c["status"] == status for c in review["checks"]) for status in (PASS, WARN, FAIL)}
        source = f"`{review['source']}`" if review["source"] else "(not given)"
        lines += ["", f"## {TITLES[kind]}: {source}", "",
                  f"{counts[PASS]} pass, {counts[WARN]} warn, {counts[FAIL]} fail", ""]
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
