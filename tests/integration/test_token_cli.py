"""`runlane token` as a user runs it, in folders with and without a Runlane instance: it says
on stderr which secret it signed with, and creates one only when asked (`--init`)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import jwt

from tests.processes import runlane_script


def token(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RUNLANE_")
            or k.startswith("RUNLANE_TEST_")}
    return subprocess.run([runlane_script(), "token", "--user", "alice", *args], cwd=folder,
                          env={**base, **env}, capture_output=True, text=True, timeout=60)


def test_a_folder_without_an_instance_gets_no_new_secret_and_is_told_what_to_do(tmp_path):
    done = token(tmp_path)
    assert done.returncode != 0
    assert done.stdout == ""
    assert str(tmp_path / "instance") in done.stderr and "--init" in done.stderr
    assert "RUNLANE_SECRET_KEY" in done.stderr and "RUNLANE_INSTANCE_PATH" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "instance").exists()


def test_init_creates_the_instance_secret_and_later_tokens_name_that_folder(tmp_path):
    first = token(tmp_path, "--init")
    assert first.returncode == 0, first.stderr
    secret = (tmp_path / "instance" / "secret.key").read_text().strip()
    assert "new development secret" in first.stderr and str(tmp_path / "instance") in first.stderr

    again = token(tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"instance folder {tmp_path / 'instance'}" in again.stderr
    claims = jwt.decode(again.stdout.strip(), secret, algorithms=["HS256"], audience="runlane")
    assert claims["sub"] == "alice"


def test_a_configured_secret_key_is_named_and_no_instance_is_needed(tmp_path):
    key = "k" * 40
    done = token(tmp_path, RUNLANE_SECRET_KEY=key)
    assert done.returncode == 0, done.stderr
    assert "RUNLANE_SECRET_KEY" in done.stderr
    jwt.decode(done.stdout.strip(), key, algorithms=["HS256"], audience="runlane")
    assert not (tmp_path / "instance").exists()
