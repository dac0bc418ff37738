"""One supervisor for every model a voice agent needs on one GPU."""

__version__ = "0.1.0"
