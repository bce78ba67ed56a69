"""The auditor's tools over audit log files alone (docs/auditors.md): `verify` chains, `who` had access, `report`."""
