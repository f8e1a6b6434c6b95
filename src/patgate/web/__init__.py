"""The HTTP edge: the aiohttp application, the proxy handler, errors, operations."""
