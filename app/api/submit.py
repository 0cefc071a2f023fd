"""Queueing a job from an admin route: one function and one error mapping for every route that starts one.

``app.jobs.submit`` checks a job against the service's state and queues it; this module turns what
it raises into the API's 4xx answers, so ``POST /v1/admin/jobs`` and the model routes that start
an ``evaluate`` or a ``promote`` job answer the same request the same way.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.api.admin_schemas import JobPublic
from app.api.errors import ApiError
from app.api.schemas import ErrorBody
from app.config import Settings
from app.jobs.kinds import JobParams
from app.jobs.submit import submit

# The statuses every admin route may answer with, for the OpenAPI schema.
ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorBody} for status in (401, 403, 404, 409, 422)}


def queue_job(session: Session, settings: Settings, params: JobParams, created_by: str) -> JobPublic:
    """Check and queue ``params``, commit, and return the new job; a request that cannot run is a 4xx."""
    try:
        job = submit(session, settings, params, created_by=created_by)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        raise ApiError(422, "invalid_config", f"{where}: {first['msg']}") from e
    except PermissionError as e:
        raise ApiError(403, "path_not_allowed", str(e)) from e
    except FileNotFoundError as e:
        raise ApiError(422, "not_found", str(e)) from e
    except LookupError as e:
        raise ApiError(404, "model_not_found", str(e.args[0])) from e
    except ValueError as e:
        raise ApiError(422, "invalid_request", str(e)) from e
    session.commit()
    return JobPublic.model_validate(job)
