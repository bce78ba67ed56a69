"""Local stand-ins for the outside world (Redis, AWS, Slack, HAProxy), shared by tests, demo and bench."""
