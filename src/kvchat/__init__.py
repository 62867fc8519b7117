"""kvchat: a terminal chat assistant for code that remembers.

The library (storage, token counting, retrieval, prompt assembly, extraction,
model client) is usable from Python and never prints; `kvchat.cli` is one
client of it.
"""

__version__ = "0.1.0"
