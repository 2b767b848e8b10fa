"""The event warehouse's core: everything but HTTP and the command line."""

__version__ = "0.1.0"
