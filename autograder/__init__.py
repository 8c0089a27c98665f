"""Tools around the hw2-dpo-ppo homework: offline fixtures, notebook loading, checks and CLIs."""
