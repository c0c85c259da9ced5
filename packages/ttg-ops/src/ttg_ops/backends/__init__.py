"""Backends carry out a run: launch workers, stream their lines, report their states."""
