"""Human review: queues with leases, the reviewers' web page and API, audit, feedback."""
