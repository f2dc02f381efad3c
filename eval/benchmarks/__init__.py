"""Offline benchmarks with their published metric definitions (ScreenSpot, Mind2Web).

Each module adds one `magma eval <name>` command (`add_command(sub)`), reads its layout through
`magma.layouts`, and scores an agent: `oracle` (reads the answer; must score 1.0, proof that the
harness is right), `random` (the floor) or `policy` (the model through serving's adapters).
"""
