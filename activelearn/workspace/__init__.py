"""A campaign's workspace: every path of its layout, its git + DVC repository, the
lock, the manifest of pool samples and the queue files.

Imports `core`, `config` and `data`.
"""
