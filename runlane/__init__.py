"""Runlane: the product shell (settings, errors, CLI, embedded Redis).

`runlane.settings` and `domain.errors` are leaf modules every layer may import;
`runlane.cli` and `runlane.embedded` sit on top and are imported by nobody. `runlane.client`
(with `client_models`, `client_stream` and `cli_client`) is the Python client: it imports no
server package, so an application can use it without Flask or Celery installed.
"""
