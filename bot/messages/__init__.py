"""Slack outbound, used by web and workers alike: Block Kit builders, the Web API poster, ids Slack echoes back."""
