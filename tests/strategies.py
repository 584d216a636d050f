"""Shared Hypothesis strategies: ids of every kind, channels, deliveries."""

from __future__ import annotations

from hypothesis import strategies as st

from campaign_states import Channel, Delivery, Emission

# Valid ids: printable, no surrounding whitespace, 1 to 128 characters.
ID_ALPHABET = st.characters(
    codec="utf-8",
    exclude_categories=("Cc", "Cs", "Zl", "Zp", "Zs"),
)
valid_ids = st.text(ID_ALPHABET, min_size=1, max_size=12)

# Malformed strs: each is refused with InvalidIdError (a ValueError).
malformed_ids = st.one_of(
    st.just(""),
    st.just("x" * 129),
    st.builds(
        lambda a, c: a + c, valid_ids, st.sampled_from(["\x00", "\n", "\x1f", "\x7f", "\x85"])
    ),
    st.builds(lambda a: " " + a, valid_ids),
    st.builds(lambda a: a + "\t", valid_ids),
)

# Wrong types: each is refused with InvalidIdTypeError (a TypeError), never coerced
# (sqlite3 would match the int 5 to the text '5', and raise OverflowError on 2**63).
wrong_type_ids = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.just(2**63),
    st.binary(max_size=4),
    st.none(),
    st.lists(st.integers(), max_size=2),
    st.floats(allow_nan=False),
    st.booleans(),
)

bad_ids = st.one_of(malformed_ids, wrong_type_ids)

channel_sets = st.frozensets(st.sampled_from(list(Channel)), min_size=1)


def deliveries(campaign_ids: st.SearchStrategy[str]) -> st.SearchStrategy[Delivery]:
    """Deliveries for the given campaign ids: messages on a channel, or impressions."""
    message = st.builds(
        Delivery,
        campaign_id=campaign_ids,
        channel=st.sampled_from([c for c in Channel if c is not Channel.IN_APP]),
        kind=st.just(Emission.MESSAGE),
        count=st.integers(1, 5),
    )
    impression = st.builds(
        Delivery,
        campaign_id=campaign_ids,
        channel=st.just(Channel.IN_APP),
        kind=st.just(Emission.IN_APP_IMPRESSION),
        count=st.integers(1, 5),
    )
    return st.one_of(message, impression)
