"""Pydantic models of every record the pipeline reads or writes, and the one JSON codec."""
