"""The transport: the Autobahn protocol, each connection's dispatch, auth, TLS, the
HTTP site and the listeners. It decodes and validates, then calls the domain."""
