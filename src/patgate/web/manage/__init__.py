"""The management REST API under ``/_patgate/api/v1/`` (SPEC.md sections 4 and 6).

Every operation is a :class:`~patgate.service.TokenService` call; this module
only finds out who is calling, checks the body against
:data:`patgate.web.manage.openapi.REQUEST_SCHEMAS` and turns results and errors into
JSON (``{"error": code, "message": text}``).

Who is calling:

- HTTP Basic with a user's login and password, for people and automation;
- or the web page's session cookie (:mod:`patgate.web.manage.page.session`) with its
  ``X-Patgate-CSRF`` header.

A token value is never accepted, neither as Bearer nor as a Basic password.
Reads need a login; every change needs the password: Basic credentials, or the
session plus a ``password`` field. Password checks are reserved per client IP
before they run (:class:`patgate.throttle.LoginThrottle`). Every
state-changing call needs a JSON body and must not come from another origin,
and browsers never get a Basic challenge (:mod:`patgate.web.manage.origin`).

Each API path answers its other methods with a JSON 405 and unknown paths
under ``/_patgate/api/`` with a JSON 404, so nothing there reaches an upstream.
"""

from __future__ import annotations

from patgate.web.manage.routes import setup_management

__all__ = ["setup_management"]
