"""unmask: streaming detection of fake-account networks."""

__version__ = "0.1.0"
