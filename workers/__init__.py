"""Worker processes: each runs one asyncio event loop over many client sockets.

``process`` is the entry point, ``hub`` holds one worker's clients and its
link to the matchmaker, ``protocol`` is the per-connection shell around the
pure codec in ``ipc``.
"""
