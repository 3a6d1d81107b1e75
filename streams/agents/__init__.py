"""The agents of quotaflow, each a thin shell: read, decide, append, checkpoint."""
