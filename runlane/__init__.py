"""Runlane: the product shell (settings, errors, CLI, embedded Redis).

`runlane.settings` and `runlane.errors` are leaf modules every layer may import;
`runlane.cli` and `runlane.embedded` sit on top and are imported by nobody.
"""
