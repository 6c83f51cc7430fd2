"""Errors the server answers with: OpenAI's error object, naming the parameter at fault.

``{"error": {"message", "type", "param", "code"}}`` is what the ``openai`` client parses into
``BadRequestError`` & co. Messages say what was wrong, with the value, and what is expected.
"""

from __future__ import annotations

from typing import Any


def show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class APIError(Exception):
    """An answer other than 2xx. ``param`` is the request field at fault (dotted path)."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 type: str = "invalid_request_error", code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.type = type
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_param(param: str, value: Any, expected: str, *, code: str = "invalid_value") -> APIError:
    """400 for one parameter: ``'temperature' is -1, expected a number in [0, 2]``."""
    return APIError(400, f"'{param}' is {show(value)}; expected {expected}", param=param, code=code)


def missing_param(param: str, expected: str) -> APIError:
    return APIError(400, f"'{param}' is required: {expected}", param=param, code="missing_required_parameter")


def unsupported_param(param: str, why: str) -> APIError:
    return APIError(400, f"'{param}' is not supported by this server: {why}", param=param,
                    code="unsupported_parameter")


def model_not_found(model: str, known: list[str]) -> APIError:
    return APIError(404, f"model {show(model)} does not exist here; available models: {known} "
                         "(GET /v1/models lists them)", param="model", code="model_not_found")


def unauthorized(message: str = "missing or wrong API key: send 'Authorization: Bearer <key>'") -> APIError:
    return APIError(401, message, type="authentication_error", code="invalid_api_key",
                    headers={"WWW-Authenticate": "Bearer"})


def generation_error(out: Any, constraint: Any = None) -> APIError:
    """A request that failed alone: its own parameters (sampling, its output constraint) are a
    400, anything else a 500. A grammar that compiled yet breaks mid-way is the constraint's
    doing: llguidance builds its lexer lazily and gives up on e.g. ``a{1000000}`` at the first
    token ("too many expressions constructed")."""
    if out.error.startswith("sampling failed"):
        return APIError(400, f"{out.error}", type="invalid_request_error", code="sampling_failed")
    if out.error.startswith("grammar failed") and constraint is not None:
        return APIError(400, f"'{constraint.param}' could not be followed: {out.error}; simplify it (smaller "
                             "repetition counts, fewer alternatives)", param=constraint.param, code="invalid_grammar")
    return APIError(500, f"generation failed: {out.error}", type="server_error", code="generation_failed")
