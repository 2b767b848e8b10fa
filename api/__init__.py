"""Interfaces to the loader: the HTTP app and the command line."""
