"""Tooling beside the product: the benchmark, the soak and the demo. The receiver and the
worker never import this package."""
