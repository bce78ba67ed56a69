"""The Procfile's processes, driven as Slack drives them: signed HTTP, the stand-in, Redis, moto, HAProxy."""
