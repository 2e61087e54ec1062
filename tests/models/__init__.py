"""Own models for `model=custom` tests: what a user's package would hold."""
