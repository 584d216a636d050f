"""``python -m campaign_states.cli``: the same as the ``campaign-states`` script."""

from __future__ import annotations

# Guarded: a spawned demo worker re-imports the parent's __main__ module under another name.
if __name__ == "__main__":
    from campaign_states.cli import main

    main()
