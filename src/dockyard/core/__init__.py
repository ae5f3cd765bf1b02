"""Pure logic: no I/O, no database, no Docker. Everything here is unit-testable."""
