"""Hostile inputs for the avatar stage, made by the tests themselves (never downloaded)."""
