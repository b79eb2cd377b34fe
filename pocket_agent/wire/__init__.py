"""The wire protocol, both directions: the envelope, typed requests and outbound
frames, error codes, and how domain events look as frames. A client can use it too.

It may import domain values (``core``, ``runs``, ``history``); the domain never
imports it."""
