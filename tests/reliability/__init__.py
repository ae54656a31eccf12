"""Reliability suite: faults and hostile input against the real broker and database."""
