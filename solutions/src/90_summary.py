# %% [markdown]
# ## Summary
#
# The headline numbers of this run, also saved to `OUTPUT_DIR/metrics.json`.

# %%
import json

(OUTPUT_DIR / "metrics.json").write_text(json.dumps(METRICS, indent=2))
print(json.dumps(METRICS, indent=2))
