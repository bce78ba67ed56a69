"""Each provider against its real load balancer: moto in server mode, or a real HAProxy."""
