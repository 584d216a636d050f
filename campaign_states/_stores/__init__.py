"""The store backends, one per folder: `memory`, `sqlite/`, `postgres/`.

Nothing is imported here: `postgres` needs psycopg (the ``postgres`` extra) and loads only
when asked for. The public names are in `campaign_states.stores`.
"""
