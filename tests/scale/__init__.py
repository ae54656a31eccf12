"""Scale-out suite: several workers in one consumer group against the real broker and database."""
