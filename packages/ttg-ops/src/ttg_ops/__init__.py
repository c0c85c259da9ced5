"""TTG operations library."""
