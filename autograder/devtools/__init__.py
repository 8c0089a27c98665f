"""Developer tools: the end-to-end demo run and the benchmarks."""
