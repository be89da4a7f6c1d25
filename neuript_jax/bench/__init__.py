"""Benchmarking code: step timing against the reference (steps), input-pipeline throughput
(input_pipeline), the largest batch that fits a memory budget (memory_fit). Not imported by
the training loops."""
