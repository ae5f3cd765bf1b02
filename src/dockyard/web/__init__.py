"""The web console (issue 7)."""
