"""The Open Responses vocabulary shared by every part of the gateway.

Submodules: ``content`` (parts), ``items`` (conversation items), ``request`` (create body),
``response`` (reply bodies), ``events`` (streaming events), ``deltas`` (adapter output),
``codec`` (encoders and decoders built once).
"""
