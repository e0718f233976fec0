"""Scale-out: encode-corpus (local processes or Ray Data), request batching and the Ray Serve service."""
