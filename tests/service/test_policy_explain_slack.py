"""`python -m bot policy explain` with SLACK_BOT_TOKEN: usergroups expanded from Slack's usergroups.users.list."""

from __future__ import annotations

import pytest

from bot.__main__ import main
from devtools.slack_standin import SlackStandin
from tests.helpers import ROOT


def test_explain_reads_a_usergroups_members_from_slack(
    slack: SlackStandin, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """S0NETOPS's members come from Slack, each named with the entry it comes from; a group Slack does not know
    (S0SRE here) is said to be unknown, not taken as empty."""
    slack.set_usergroup("S0NETOPS", ["U0NET1", "U0NET2"])
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test-token")
    monkeypatch.setenv("SLACK_API_URL", slack.api_url)

    assert main(["policy", "explain", str(ROOT / "policy.example.yml"), "--target", "lb-prod"]) == 0

    out = capsys.readouterr().out
    assert "U0NET1  from targets.lb-prod.approvers > role:netops (roles.netops) > usergroup S0NETOPS" in out
    assert "U0NET2  from targets.lb-prod.approvers > role:netops (roles.netops) > usergroup S0NETOPS" in out
    assert "usergroup S0SRE (members not known here)  from targets.lb-prod.requesters > role:sre" in out
    assert [call.args["usergroup"] for call in slack.calls("usergroups.users.list")] == ["S0SRE", "S0NETOPS"]
