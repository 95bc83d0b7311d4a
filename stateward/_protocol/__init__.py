"""The protocol below everything that speaks it: typed messages, frames, their wire.

``messages`` (the requests and responses between a task and the supervisor), ``frames``
(what a task process and its parent exchange), ``converter`` (the one strict converter
turning both into JSON-ready dicts and back) and ``wire`` (frames over a byte stream).
``context`` and ``runtime`` import it; it imports neither.
"""
