"""Coordinated-cluster signals: features, rolling windows, account links, clusters and scores."""
