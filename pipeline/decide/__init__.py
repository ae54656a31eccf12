"""Decide: fuse the three signals into an enforcement decision and review work."""
