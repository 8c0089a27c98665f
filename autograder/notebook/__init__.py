"""The homework notebook: build it from its sources, set up an nbgrader course folder, execute its cells."""
