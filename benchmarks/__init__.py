"""ttsearch.benchmarks."""
