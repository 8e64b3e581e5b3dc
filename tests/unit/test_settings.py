from __future__ import annotations

import stat

import pytest

from domain.errors import ConfigurationError
from runlane.settings import Settings, instance_secret

SECRET = "s" * 40


def settings(tmp_path, **kw):
    base = {"instance_path": tmp_path, "redis_url": None, "database_url": None,
            "secret_key": None, "signing_key": None, "env": "development"}
    base.update(kw)
    return Settings(**base)


def test_instance_secret_creates_a_0600_file_once_and_returns_the_same_value(tmp_path):
    folder = tmp_path / "inst"
    first = instance_secret(folder)
    path = folder / "secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 32
    assert instance_secret(folder) == first
    assert path.read_text().strip() == first


def test_instance_secrets_of_different_folders_differ(tmp_path):
    assert instance_secret(tmp_path / "a") != instance_secret(tmp_path / "b")


def test_jwt_secret_refuses_production_without_secret_key(tmp_path):
    with pytest.raises(ConfigurationError, match="production"):
        settings(tmp_path, env="production").jwt_secret()
    assert not (tmp_path / "secret.key").exists()


def test_jwt_secret_falls_back_to_the_instance_secret_in_development(tmp_path):
    assert settings(tmp_path).jwt_secret() == instance_secret(tmp_path)


def test_jwt_secret_uses_the_configured_key_and_rejects_short_ones(tmp_path):
    assert settings(tmp_path, env="production", secret_key=SECRET).jwt_secret() == SECRET
    with pytest.raises(ConfigurationError, match="32 bytes"):
        settings(tmp_path, secret_key="short").jwt_secret()


def test_context_signing_key_differs_from_the_jwt_secret(tmp_path):
    s = settings(tmp_path, secret_key=SECRET)
    key = s.context_signing_key()
    assert isinstance(key, bytes) and len(key) == 32
    assert key != s.jwt_secret().encode()
    assert key == settings(tmp_path, secret_key=SECRET).context_signing_key()
    assert key != settings(tmp_path, secret_key="t" * 40).context_signing_key()


def test_context_signing_key_uses_an_explicit_signing_key(tmp_path):
    assert settings(tmp_path, signing_key="explicit").context_signing_key() == b"explicit"


def test_require_redis_url_raises_when_unset(tmp_path):
    with pytest.raises(ConfigurationError, match="REDIS_URL"):
        settings(tmp_path, redis_url=None).require_redis_url()
    assert settings(tmp_path, redis_url="redis://h:1/0").require_redis_url() == "redis://h:1/0"


def test_resolved_database_url_defaults_to_sqlite_in_the_instance_folder(tmp_path):
    assert settings(tmp_path).resolved_database_url() == (
        f"sqlite:///{(tmp_path / 'runlane.db').resolve()}")
    assert settings(tmp_path, database_url="sqlite:///x.db").resolved_database_url() == "sqlite:///x.db"


def test_signing_secret_source_refuses_to_invent_an_instance_secret(tmp_path):
    from runlane.secrets import signing_secret_source

    with pytest.raises(ConfigurationError, match="--init"):
        signing_secret_source(settings(tmp_path / "nowhere"))
    assert not (tmp_path / "nowhere").exists()
    created = signing_secret_source(settings(tmp_path / "here"), init=True)
    assert "new development secret" in created and (tmp_path / "here" / "secret.key").exists()
    assert signing_secret_source(settings(tmp_path / "here")) == (
        f"the development secret of instance folder {(tmp_path / 'here').resolve()}")


def test_signing_secret_source_names_the_configured_key(tmp_path):
    from runlane.secrets import signing_secret_source

    assert signing_secret_source(settings(tmp_path, secret_key=SECRET)) == "RUNLANE_SECRET_KEY"
    rotated = settings(tmp_path, jwt_keys={"2026": SECRET}, jwt_active_kid="2026")
    assert signing_secret_source(rotated) == "RUNLANE_JWT_KEYS key '2026'"
    with pytest.raises(ConfigurationError, match="production"):
        signing_secret_source(settings(tmp_path, env="production"))
