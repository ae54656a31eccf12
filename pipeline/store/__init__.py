"""Engine, sessions and the SQLAlchemy tables shared by the stages."""
