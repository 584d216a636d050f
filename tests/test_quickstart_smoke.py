"""The issue's quickstart, on every store."""

from __future__ import annotations

import pytest

from campaign_states import Outcome, State
from campaign_states.exceptions import CampaignArchivedError


class TestQuickstart:
    """The quickstart sequence behaves as documented on every store."""

    def test_lifecycle(self, registry):
        reg = registry
        reg.create_segment("seg-vip", name="VIP customers")
        c = reg.create_campaign(
            name="Black Friday", channels={"email", "in_app"}, segments={"seg-vip"}
        )
        assert State.ACTIVE_STOPPED == reg.get(c.id).state
        reg.resume(c.id, actor="ops@example.com")
        reg.archive(c.id, actor="ops@example.com")
        with pytest.raises(CampaignArchivedError, match="unarchive"):
            reg.edit(c.id, name="x")
        assert State.ACTIVE_STOPPED == reg.unarchive(c.id, actor="ops@example.com").campaign.state
        reg.create_campaign(name="two", channels=["sms"], campaign_id="c-2")
        out = reg.archive_many([c.id, "c-2", "c-2", "nope"])
        assert [c.id, "c-2", "nope"] == list(out)
        assert Outcome.NOT_FOUND == out["nope"].outcome
        reg.unarchive_many([c.id, "c-2"])
        assert (c.id,) == reg.archive_segment("seg-vip", dry_run=True).campaign_ids
