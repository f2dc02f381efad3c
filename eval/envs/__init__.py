"""Environments used for demonstrations and closed-loop evaluation (MiniWoB++, Meta-World, adapters)."""
