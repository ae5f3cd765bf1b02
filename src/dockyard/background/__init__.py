"""Loops that run inside `dockyard serve`: the reconciler."""
