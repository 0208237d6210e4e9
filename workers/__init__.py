"""Worker processes: each runs one asyncio event loop over many client sockets.

``process`` is the entry point and holds the link to the matchmaker; ``hub``
holds one worker's clients by key and routes to them; ``connection`` is one
client's state and rules, with no I/O; ``protocol`` carries bytes between a
connection and its socket; ``migrate`` moves clients to other workers.
"""
