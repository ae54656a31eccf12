"""Runners: the Faust app (one agent per stage between Kafka topics) and the embedded runner."""
