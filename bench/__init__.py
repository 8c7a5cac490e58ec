"""keyledger's benchmarks: `make bench` (full) and `make bench-quick` (tiny sizes, in CI)."""
