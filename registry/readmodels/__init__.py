"""Read models: SQL tables projected from the event log, and the runner that keeps them."""
