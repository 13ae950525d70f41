"""Reading back what the pipeline did: the audit, the dead letters, the consent log."""
