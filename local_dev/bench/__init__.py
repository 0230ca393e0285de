"""The benchmarks: `make bench`, `make bench-long` and `make bench-stream` (speed, memory and accuracy)."""
