"""The audit log: its writer and hash chain, and the auditor's tools over its files (verify, who, report)."""
