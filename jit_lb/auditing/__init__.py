"""The auditor's tools over audit log files alone (CONTRACT §8): `verify` the chains, `who` had access, `report`."""
