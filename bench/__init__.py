"""Benchmarks: they print ratios against their anchors; they are not timed tests (`make bench`)."""
