"""delivery-gate: the fail-closed check a pipeline makes before every emission.

Once ``archive()`` (or a segment archive, or a bulk archive) has returned, no gate in any
thread, process or host admits another message or impression for those campaigns; and an
emission admitted before that has finished, or the archive waited for it.

>>> from campaign_states import open_registry
>>> from delivery_gate import DeliveryGate, Reason
>>> reg = open_registry("memory://")
>>> c = reg.create_campaign(name="Spring sale", channels={"email"})
>>> _ = reg.resume(c.id)
>>> with DeliveryGate(reg) as gate:
...     gate.check(c.id, "email").admitted, gate.check(c.id, "sms").reason
(True, <Reason.CHANNEL_NOT_ENABLED: 'channel_not_enabled'>)
"""

from __future__ import annotations

from campaign_states import Emission

from ._decision import Decision, Reason
from ._gate import DeliveryGate
from ._metrics import DecisionCounter, DecisionObserver
from ._permit import Permit
from ._refresh import GateStatus

__all__ = [
    "Decision",
    "DecisionCounter",
    "DecisionObserver",
    "DeliveryGate",
    "Emission",
    "GateStatus",
    "Permit",
    "Reason",
]
