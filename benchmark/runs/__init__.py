"""The run directory: its files, ownership and locks, fingerprints, child processes, the sweep's plan."""
