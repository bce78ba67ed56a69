"""Outbound Slack, used by the web and the workers alike: Block Kit limits, cards, views, sentences, the poster."""
