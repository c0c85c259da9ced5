"""The TTG worker: computes its shard of a parameter sweep and reports a JSON summary."""

__version__ = "1.1.0"
