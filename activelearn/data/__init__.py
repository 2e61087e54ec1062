"""Images: decoding, the one preprocessing function, class folders, bundled datasets.

Imports only `core` and `config`.
"""
