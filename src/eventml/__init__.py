"""eventml: log-driven machine-learning serving."""

__version__ = "0.1.0"
