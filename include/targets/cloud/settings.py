"""Reading ``FLIGHTS_<CLOUD>_*`` variables: one set of helpers whose errors name the variable and the fix.

Each cloud's ``settings`` module is the only reader of its own variables (``include/config.py``
reads the cloud-neutral ones); every value is validated when the settings are built.
"""

from __future__ import annotations

from include.config import ConfigError


def get(env, name: str, default: str = "") -> str:
    """The variable's value, stripped, or ``default`` when unset or blank."""
    return (env.get(name) or "").strip() or default


def integer(env, name: str, default: int, minimum: int = 1) -> int:
    raw = get(env, name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number; set it to an integer ≥ {minimum}.") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} is below {minimum}; set it to an integer ≥ {minimum}.")
    return value


def boolean(env, name: str, default: bool) -> bool:
    raw = get(env, name, "true" if default else "false").lower()
    if raw not in ("true", "false", "1", "0", "yes", "no"):
        raise ConfigError(f"{name}={raw!r} is not a boolean; use true or false.")
    return raw in ("true", "1", "yes")


def require(env, names: tuple[str, ...], target: str, doc: str) -> None:
    """Fail naming every missing variable of ``names`` at once."""
    missing = [n for n in names if not get(env, n)]
    if missing:
        raise ConfigError(f"FLIGHTS_TARGET={target} needs {', '.join(missing)}; see {doc} (Settings) for each value.")


def pii_key_secret(env, name: str, store: str, form: str) -> str:
    """The secret the ingest job reads the PII key from (``name``), which must be one of ``store``'s (a module).

    Checked with the job's own rule (``include.source.pii.secret_store``), so a value the job
    would refuse fails here, when the DAGs are parsed.
    """
    from include.source.pii import PiiConfigError, secret_store

    value = get(env, name)
    if not value:
        return ""
    try:
        found = secret_store(value)
    except PiiConfigError:
        found = ""
    if found != store:
        raise ConfigError(f"{name}={value!r} is not {form}; set it to that, or unset it.")
    return value
