"""The gateway: the catch-all proxy handler and everything forwarding needs.

- :mod:`~patgate.web.gateway.proxy`: the handler (facts → ``Gate.check`` →
  forward or refuse) and the streaming both ways.
- :mod:`~patgate.web.gateway.forward_auth`: the decision endpoint
  (``forward_auth:``), facts from a proxy's headers → ``Gate.check`` → 200/refusal.
- :mod:`~patgate.web.gateway.targets`: what forwarding needs of the config.
- :mod:`~patgate.web.gateway.headers`: what headers go upstream and back.
- :mod:`~patgate.web.gateway.webdav`: WebDAV URLs pointed at the upstream.
- :mod:`~patgate.web.gateway.upstream`: the one upstream client session.
- :mod:`~patgate.web.gateway.websocket`: WebSocket upgrades, proxied.
- :mod:`~patgate.web.gateway.streams`: open streams, cut on a revocation.
- :mod:`~patgate.web.gateway.inflight`: what a graceful stop waits for.
- :mod:`~patgate.web.gateway.sync`: change notices and usage writes.
"""
