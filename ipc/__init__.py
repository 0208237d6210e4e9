"""What the server's processes say to each other, and how it gets there.

``messages`` (what crosses between the workers and the matchmaker, pure),
``channel`` (the batched pipes that carry them), ``fdpass`` (client sockets
passed from the acceptor to a worker, and between workers) and ``load`` (how
busy each worker is, in shared memory). Clients never see any of it: their
protocol is ``wire``'s.
"""
