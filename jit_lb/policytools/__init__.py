"""The policy author's tools (`python -m bot policy explain|test|diff|schema`, docs/policy-tools.md): judge, explain,
test and compare a policy file without running the product."""
