"""The TTG worker."""
