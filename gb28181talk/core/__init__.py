"""The application core: talk sessions, their ports, the pacer, the one place that starts them."""
