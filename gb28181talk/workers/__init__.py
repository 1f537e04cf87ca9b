"""Media workers (``--workers N``): talk sessions in child processes the control places."""
