"""patgate: a reverse-proxy authentication gateway for personal access tokens."""

__version__ = "0.1.0"
