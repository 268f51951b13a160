"""The HTTP side: the ASGI app, one receiver per provider, the API, errors, metrics."""
