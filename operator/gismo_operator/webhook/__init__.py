"""The admission server: its TLS setup (:mod:`.server`, dev certificates in :mod:`.devcert`) and every
override of kopf internals (:mod:`.kopf_overrides`)."""
