"""Model fixtures shared by tests and benchmarks (no downloads: everything comes from ../shared or site-packages)."""
