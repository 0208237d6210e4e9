"""The server: ``python -m matchmaker`` starts the supervisor, which starts the rest.

Process roles are modules: ``supervisor`` (the main process), ``acceptor``
(accepts TCP connections and passes each socket to a worker), ``service`` (the
matchmaker process around the pure ``table``); the workers live in the
``workers`` package.
"""
