"""nbgrader configuration for hw2_dpo_ppo (used by `python -m autograder release` and the course folder)."""
c = get_config()  # noqa: F821 (provided by traitlets when nbgrader loads this file)

c.CourseDirectory.course_id = "llm-course-hw2"

# What the student sees in place of a solution region: the spec's TODO banner and a call to todo().
c.ClearSolutions.code_stub = {
    "python": "# ========== TODO ==========\n"
              "#      Your code here      =\n"
              "# ==========================\n"
              "todo()"
}
c.ClearSolutions.text_stub = "_Your answer here._"
