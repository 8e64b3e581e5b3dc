"""Which secret `runlane token` signs with, said out loud, and never one invented by accident.

A token is only good for a server that holds the same secret. In development that secret is
the `secret.key` of the instance folder, created on first use; `runlane token` run in another
folder used to create a fresh one there and print a token every server rejected, with no hint
why. It now names the secret it used and refuses to create one unless asked (`--init`).
"""
from __future__ import annotations

from domain.errors import ConfigurationError
from runlane.settings import SECRET_FILE, Settings, instance_secret


def signing_secret_source(settings: Settings, *, init: bool = False) -> str:
    """Where the key that `TokenVerifier.issue` (runlane/tokens.py) will sign with comes
    from, for the user to compare with the server's; with `init`, a missing development
    secret is created.

    Raises:
        ConfigurationError: no configured key and no instance secret (and not `init`), or a
            configuration `jwt_secret()` refuses (production without a key, a short key).
    """
    kid = settings.jwt_active_kid
    if kid is not None and kid in settings.jwt_keys:
        return f"RUNLANE_JWT_KEYS key {kid!r}"
    if settings.secret_key or settings.env == "production":
        settings.jwt_secret()  # refuses a short key, or production without one
        return "RUNLANE_SECRET_KEY"
    folder = settings.instance_path.resolve()
    path = folder / SECRET_FILE
    if path.exists():
        return f"the development secret of instance folder {folder}"
    if not init:
        raise ConfigurationError(
            f"no Runlane instance in {folder} (no {SECRET_FILE}), so no server would accept a "
            "token signed here: run this in the folder where `runlane up` runs, or set "
            "RUNLANE_INSTANCE_PATH to its instance folder or RUNLANE_SECRET_KEY to the "
            "server's secret; `--init` creates a new development secret here instead")
    instance_secret(folder)
    return (f"a new development secret in instance folder {folder} (a server started from "
            "another folder will not accept its tokens)")
