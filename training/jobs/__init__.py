"""Background jobs: the runner that trains in separate processes, the run registry (SQLite) and the one progress channel."""
