"""An MLflow server's refusal of who we are (401) or of what we asked (403), as a one-line user error.

Credentials come from the environment (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, read by MLflow's
client), never from a config file: a config is committed to git, a password must not be.
"""

from __future__ import annotations

import os

from masklab.errors import UserError

CREDENTIALS = "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"


class AccessDenied(UserError):
    """The tracking server refused the credentials or the permission."""


def access_denied(exc: BaseException, operation: str, tracking_uri: str | None = None) -> AccessDenied | None:
    """The user error for ``exc`` when it is an authentication (401) or permission (403) refusal, else None."""
    code = str(getattr(exc, "error_code", ""))
    text = str(exc)
    where = f"the MLflow server at {tracking_uri}" if tracking_uri else "the MLflow server"
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if code == "UNAUTHENTICATED" or "error code 401" in text:
        who = f"the password of user '{user}'" if user else "no credentials (none set)"
        return AccessDenied(f"{operation}: {where} refused {who}; set {CREDENTIALS} in the environment")
    if code == "PERMISSION_DENIED" or "error code 403" in text:
        who = f"user '{user}'" if user else "an anonymous user"
        return AccessDenied(f"{operation}: {where} denied {who} permission for it; ask one of its admins for "
                            "EDIT (runs) or MANAGE (model stages, deletion) on the experiment or model")
    return None
