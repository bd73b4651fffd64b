"""The shared memory itself: ``layout`` (THE one definition of the region format), ``serialize``
(how an object's bytes are laid out in an extent), ``mapping`` (mapping the slice) and
``coherence`` (the one flush/invalidate hook for non-coherent CXL memory), ``poolfile`` (the marker
that makes a file a Gismo pool file: the only files the node component and the agent format)."""
