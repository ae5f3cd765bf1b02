"""Use cases: each combines the database and a runtime. No DB transaction is held open
across a Docker call."""
