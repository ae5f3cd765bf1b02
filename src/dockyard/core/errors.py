"""Errors that carry an HTTP status and a message a user can act on."""


class DockyardError(Exception):
    """A refusal the user caused or can fix. `field` names the input at fault."""

    status_code = 400

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(DockyardError):
    status_code = 400


class NotFound(DockyardError):
    status_code = 404


class Conflict(DockyardError):
    """The request is valid but cannot be done now (no free GPUs, wrong status)."""

    status_code = 409


class Unauthorized(DockyardError):
    status_code = 401


class Forbidden(DockyardError):
    status_code = 403


class TooManyRequests(DockyardError):
    """A per-user or per-address limit: the message names it; retry later."""

    status_code = 429
