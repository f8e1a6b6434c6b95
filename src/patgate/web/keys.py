"""The application state, one ``AppKey`` each: every module reads it from here.

``create_app`` (:mod:`patgate.web.app`) sets them; the three applications it
serves (the gateway, management and operations) read them. The types are
imported for the type checker only, so that this module imports none of the
modules that use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from patgate.cache import GrantCache
    from patgate.config import Config
    from patgate.gate import Gate
    from patgate.logs import AccessLog
    from patgate.service import TokenService
    from patgate.store.base import Store
    from patgate.throttle import LoginThrottle
    from patgate.web.gateway.decision_server import DecisionServer
    from patgate.web.gateway.forward_auth import Decider
    from patgate.web.gateway.inflight import InFlight
    from patgate.web.gateway.proxy import ProxyHandler
    from patgate.web.gateway.streams import StreamRegistry
    from patgate.web.ops.metrics import Metrics

CONFIG: web.AppKey[Config] = web.AppKey("config")
STORE: web.AppKey[Store] = web.AppKey("store")
GATE: web.AppKey[Gate] = web.AppKey("gate")
CACHE: web.AppKey[GrantCache] = web.AppKey("cache")
SERVICE: web.AppKey[TokenService] = web.AppKey("service")
PROXY: web.AppKey[ProxyHandler] = web.AppKey("proxy")
FORWARD_AUTH: web.AppKey[Decider] = web.AppKey("forward_auth")
# The decision endpoint's own listener (forward_auth.listen), when it has one.
DECISIONS: web.AppKey[DecisionServer] = web.AppKey("decisions")
STREAMS: web.AppKey[StreamRegistry] = web.AppKey("streams")
IN_FLIGHT: web.AppKey[InFlight] = web.AppKey("in_flight")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
ACCESS_LOG: web.AppKey[AccessLog] = web.AppKey("access_log")
LOGIN_THROTTLE: web.AppKey[LoginThrottle] = web.AppKey("login_throttle")
OPENAPI: web.AppKey[bytes] = web.AppKey("openapi")
