"""Read models built from the event log, and the code that keeps them up to date."""
