"""Audio sources a talk session plays: tone, file, live push, RTP ingest, a device's own voice."""
