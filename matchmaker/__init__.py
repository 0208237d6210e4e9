"""The server: ``python -m matchmaker`` starts the supervisor, which starts the rest.

"The matchmaker" is one of those processes, the one that owns the table
(``service``); this package is named after it but holds the supervisor, the
acceptor and the configuration as well, because it is what starts the server.

Process roles are modules: ``supervisor`` (the main process), ``acceptor``
(accepts TCP connections and passes each socket to a worker), ``service`` (the
matchmaker process around the pure ``table``); the workers live in the
``workers`` package.
"""
