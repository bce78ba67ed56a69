"""The core both processes share: policy, requests, store, audit, settings, the composition root; no Slack or boto3."""
