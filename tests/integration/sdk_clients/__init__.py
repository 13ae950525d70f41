"""Scripts that drive the platforms' own SDKs against the collector, run as child processes."""
