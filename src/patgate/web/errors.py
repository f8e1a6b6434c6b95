"""Answers as aiohttp responses: the one place an HTTP refusal is built.

What to answer is decided apart from HTTP (:mod:`patgate.answers`); this
module only puts an :class:`~patgate.answers.Answer` on the wire.
"""

from __future__ import annotations

from aiohttp import web

from patgate.answers import JSON, Answer, error_answer


def response_of(answer: Answer) -> web.Response:
    response = web.Response(status=answer.status, body=answer.body, content_type=JSON)
    for name, value in answer.headers:
        response.headers.add(name, value)
    return response


def error_response(
    status: int,
    error: str,
    *,
    style: str = "json",
    message: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    response = response_of(error_answer(status, error, style=style, message=message))
    if headers:
        response.headers.update(headers)
    return response
