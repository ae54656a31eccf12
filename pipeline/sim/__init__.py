"""Simulated account-event streams with ground truth, for the demo, tests and benchmarks."""
