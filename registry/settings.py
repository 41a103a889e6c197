"""The registry's settings in one place: the store, every ``REGISTRY_*`` variable,
where its value came from, and the checks run before anything starts.

One setting picks the store, ``REGISTRY_DATABASE_URL``:

- unset: an embedded SQLite file, ``$REGISTRY_DATA_DIR/registry.sqlite``
  (``REGISTRY_DATA_DIR`` defaults to ``./registry-data``; created on first use);
- ``sqlite:///relative/path.sqlite`` or ``sqlite:////absolute/path.sqlite``;
- ``postgresql://user:password@host:port/dbname`` (password and port optional);
- ``memory:`` keeps everything in this process only (tests, throwaway runs).

``REGISTRY_READ_DATABASE_URL`` (optional, PostgreSQL only) names a read replica of that
database (a streaming standby): the read-model queries go there, everything else
(writes, the event store, leases, locks, the access check) stays on the primary.

Values come from the environment and, optionally, a file named by
``REGISTRY_CONFIG_FILE`` in the env-file format containers use (``KEY=VALUE`` lines,
``#`` comments, optional quotes): the same keys as the environment, which wins where
both give one. So one ConfigMap, one ``--env-file`` and one shell export all mean the
same thing.

Any setting may instead be read from a file: ``REGISTRY_X_FILE=/path`` sets
``REGISTRY_X`` to that file's content (one trailing newline dropped), the way
container images take secrets (``POSTGRES_PASSWORD_FILE``): a database URL with its
password, or a token, mounted from a Secret, never in the process environment of the
pod spec. Both set with different values is an error.

``registry config --show`` prints the effective settings with secrets masked;
``registry serve`` and ``registry project`` refuse to start on an unknown
``REGISTRY_*`` name (a typo would otherwise silently fall back to a default) or on any
invalid or contradictory value, naming it and what to do.

A leaf module: it imports nothing else of the registry but its errors, so anything may
read settings. The server's own settings (``services.server.ServerSettings``) are
checked with these by ``registry.bootstrap.check_settings``.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from registry.domain.errors import InvalidCommand

DEFAULT_DATA_DIR = "registry-data"

TLS_PARAMETERS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword", "sslcrl")
"""The libpq TLS parameters a PostgreSQL URL's query may carry: every connection, the
event store's included (``POSTGRES_SSL*``, read by ``registry.persistence.pgstore``),
connects with them. Any other ``ssl*`` parameter is refused rather than dropped."""

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")

_TLS_FILES = ("sslrootcert", "sslcert", "sslkey", "sslcrl")


class ConfigurationError(InvalidCommand):
    reason = "INVALID_CONFIGURATION"


@dataclass(frozen=True)
class Settings:
    database_url: str
    cache_size: int = 20_000
    pool_size: int = 8
    statement_timeout: float = 30.0
    """Seconds a statement of a write transaction may run before PostgreSQL cancels it
    and the event table's lock is released (``REGISTRY_DB_STATEMENT_TIMEOUT``)."""
    idle_in_transaction_timeout: float = 5.0
    """Seconds a write connection may sit idle inside a transaction before PostgreSQL
    ends its session (``REGISTRY_DB_IDLE_IN_TRANSACTION_TIMEOUT``)."""
    read_database_url: str = ""
    """A read replica of ``database_url`` (``REGISTRY_READ_DATABASE_URL``): where the
    read-model queries run; empty: on the primary. Never written to."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        url = environ.get("REGISTRY_DATABASE_URL", "").strip()
        if not url:
            data_dir = Path(environ.get("REGISTRY_DATA_DIR", DEFAULT_DATA_DIR))
            url = f"sqlite:///{data_dir / 'registry.sqlite'}"
        return cls(
            database_url=url,
            cache_size=whole_number(environ, "REGISTRY_CACHE_SIZE", cls.cache_size),
            pool_size=whole_number(environ, "REGISTRY_POOL_SIZE", cls.pool_size),
            statement_timeout=_seconds(
                environ, "REGISTRY_DB_STATEMENT_TIMEOUT", cls.statement_timeout
            ),
            idle_in_transaction_timeout=_seconds(
                environ, "REGISTRY_DB_IDLE_IN_TRANSACTION_TIMEOUT", cls.idle_in_transaction_timeout
            ),
            read_database_url=environ.get("REGISTRY_READ_DATABASE_URL", "").strip(),
        )

    @property
    def backend(self) -> str:
        return urlsplit(self.database_url).scheme.split("+")[0] or "memory"

    def describe(self) -> str:
        """The store, with any password masked (``mask_url``)."""
        return mask_url(self.database_url)

    def eventsourcing_env(self) -> dict[str, str]:
        """Translate our one setting into the event store library's environment.

        The library never creates tables (``CREATE_TABLE=n``): Alembic migrations own
        all DDL (``registry.persistence.migrate``)."""
        env = {"AGGREGATE_CACHE_MAXSIZE": str(self.cache_size)}
        parts = urlsplit(self.database_url)
        if self.backend == "memory":
            env["PERSISTENCE_MODULE"] = "eventsourcing.popo"
        elif self.backend == "sqlite":
            path = Path(unquote(parts.path.removeprefix("/")))
            if not path.name:
                raise ConfigurationError(f"no file in {self.database_url!r}")
            path.parent.mkdir(parents=True, exist_ok=True)
            env.update(
                PERSISTENCE_MODULE="eventsourcing.sqlite",
                SQLITE_DBNAME=str(path),
                SQLITE_LOCK_TIMEOUT="30",
                CREATE_TABLE="n",
                # The library's recorder, storing each event's authenticator.
                APPLICATION_RECORDER_TOPIC="registry.persistence.recorder:RegistrySQLiteRecorder",
            )
        elif self.backend in ("postgresql", "postgres"):
            dbname = unquote(parts.path.lstrip("/"))
            if not dbname:
                raise ConfigurationError(f"no database name in {self.describe()!r}")
            env.update(
                POSTGRES_DBNAME=dbname,
                POSTGRES_HOST=parts.hostname or "127.0.0.1",
                POSTGRES_PORT=str(parts.port or 5432),
                POSTGRES_USER=unquote(parts.username or os.environ.get("USER", "postgres")),
                POSTGRES_PASSWORD=unquote(parts.password or ""),
                POSTGRES_POOL_SIZE=str(self.pool_size),
                POSTGRES_MAX_OVERFLOW=str(self.pool_size),
                POSTGRES_CONNECT_TIMEOUT="10",
                POSTGRES_LOCK_TIMEOUT="10",
                POSTGRES_STATEMENT_TIMEOUT=str(self.statement_timeout),
                # Whole seconds: the library's setting is an integer.
                POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT=str(
                    max(1, round(self.idle_in_transaction_timeout))
                ),
                CREATE_TABLE="n",
                # The library's factory, plus the URL's TLS parameters on its pool.
                PERSISTENCE_MODULE="registry.persistence.pgstore",
                # Same writes as the library's recorder, one cheaper insert statement.
                APPLICATION_RECORDER_TOPIC="registry.persistence.recorder:RegistryPostgresRecorder",
            )
            env.update(
                (f"POSTGRES_{name.upper()}", value) for name, value in self.tls_parameters().items()
            )
        else:
            raise ConfigurationError(
                f"unsupported database URL {self.describe()!r}: use sqlite:///FILE, "
                "postgresql://USER@HOST:PORT/DB or memory:"
            )
        return env

    def tls_parameters(self) -> dict[str, str]:
        """The URL's TLS parameters (``TLS_PARAMETERS``), checked: an unknown ``ssl*``
        name, an unknown ``sslmode`` or a missing certificate or key file is a
        ``ConfigurationError`` here, not a connection that silently goes without."""
        return url_tls_parameters(self.database_url, "REGISTRY_DATABASE_URL")

    def check_read_replica(self) -> None:
        """A read URL is a PostgreSQL database, beside a PostgreSQL primary (the replica
        replays the primary's tables: there is nothing to replicate from a file), with
        TLS parameters checked as the primary's are."""
        if not self.read_database_url:
            return
        name = "REGISTRY_READ_DATABASE_URL"
        if self.backend not in ("postgresql", "postgres"):
            raise ConfigurationError(
                f"{name} is set but the store is {self.describe()!r}: a read replica "
                "needs a PostgreSQL REGISTRY_DATABASE_URL"
            )
        parts = urlsplit(self.read_database_url)
        if parts.scheme.split("+")[0] not in ("postgresql", "postgres"):
            raise ConfigurationError(
                f"{name} must be postgresql://USER@HOST:PORT/DB, got "
                f"{mask_url(self.read_database_url)!r}"
            )
        if not unquote(parts.path.lstrip("/")):
            raise ConfigurationError(
                f"no database name in {name} {mask_url(self.read_database_url)!r}"
            )
        url_tls_parameters(self.read_database_url, name)


def url_tls_parameters(url: str, setting: str) -> dict[str, str]:
    """A PostgreSQL URL's TLS parameters, checked (``Settings.tls_parameters``);
    ``setting`` names the variable in errors."""
    found = {
        name: value
        for name, value in parse_qsl(urlsplit(url).query)
        if name.lower().startswith("ssl")
    }
    unknown = sorted(set(found) - set(TLS_PARAMETERS))
    if unknown:
        raise ConfigurationError(
            f"unsupported TLS parameter(s) {', '.join(unknown)} in {setting}: "
            f"the registry passes {', '.join(TLS_PARAMETERS)} to every connection"
        )
    mode = found.get("sslmode")
    if mode is not None and mode not in SSL_MODES:
        raise ConfigurationError(
            f"sslmode={mode!r} in {setting}: use one of {', '.join(SSL_MODES)}"
        )
    for name in _TLS_FILES:
        path = found.get(name)
        system = name == "sslrootcert" and path == "system"
        if path and not system and not Path(path).is_file():
            raise ConfigurationError(f"{name}={path} in {setting}: no such file")
    return found


def data_file(setting: str, default_name: str, environ: Mapping[str, str] | None = None) -> Path:
    """The file a setting names, else ``default_name`` in ``REGISTRY_DATA_DIR``: where
    the embedded registry keeps its keys and published checkpoints with no set-up."""
    environ = os.environ if environ is None else environ
    given = environ.get(setting, "").strip()
    if given:
        return Path(given)
    return Path(environ.get("REGISTRY_DATA_DIR", "") or DEFAULT_DATA_DIR) / default_name


def whole_number(environ: Mapping[str, str], key: str, default: int) -> int:
    """A whole number of at least 1, ``default`` when unset; anything else names ``key``."""
    value = environ.get(key)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigurationError(f"{key} must be a whole number, got {value!r}") from None
    if number < 1:
        raise ConfigurationError(f"{key} must be at least 1, got {number}")
    return number


def _seconds(environ: Mapping[str, str], key: str, default: float) -> float:
    """A positive number of seconds, at most an hour: a write that waits longer is stuck."""
    value = environ.get(key)
    if value is None or value == "":
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigurationError(f"{key} must be a number of seconds, got {value!r}") from None
    if not 1 <= seconds <= 3600:
        raise ConfigurationError(f"{key} must be 1..3600 seconds, got {value!r}")
    return seconds


FILE_VARIABLE = "REGISTRY_CONFIG_FILE"
LINE = re.compile(r"^(?:export\s+)?(REGISTRY_[A-Z0-9_]+)\s*=\s*(.*)$")


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    meaning: str
    secret: bool = False


SETTINGS: tuple[Setting, ...] = (
    Setting("REGISTRY_CONFIG_FILE", "", "an env-file with more of these settings"),
    Setting(
        "REGISTRY_DATABASE_URL",
        "sqlite:///$REGISTRY_DATA_DIR/registry.sqlite",
        "the store: sqlite:///path, postgresql://user:password@host/db, memory:",
        secret=True,
    ),
    Setting(
        "REGISTRY_READ_DATABASE_URL",
        "",
        "a read replica (streaming standby) of that PostgreSQL database: read-model "
        "queries go there (replica lag: pass min_position to read your writes)",
        secret=True,
    ),
    Setting("REGISTRY_DATA_DIR", "registry-data", "the embedded store's directory"),
    Setting("REGISTRY_CACHE_SIZE", "20000", "aggregates kept in memory per process"),
    Setting("REGISTRY_POOL_SIZE", "8", "database connections per process"),
    Setting(
        "REGISTRY_DB_STATEMENT_TIMEOUT",
        "30",
        "seconds a write statement may run before it is cancelled (lock released)",
    ),
    Setting(
        "REGISTRY_DB_IDLE_IN_TRANSACTION_TIMEOUT",
        "5",
        "seconds a write connection may idle inside a transaction",
    ),
    Setting("REGISTRY_LISTEN", "127.0.0.1:50051", "the server's address"),
    Setting("REGISTRY_MAX_WORKERS", "16", "threads serving calls"),
    Setting("REGISTRY_MAX_CONCURRENT_RPCS", "64", "calls in flight before RESOURCE_EXHAUSTED"),
    Setting("REGISTRY_MAX_STREAMS_PER_PRINCIPAL", "4", "open streams per caller"),
    Setting(
        "REGISTRY_MAX_STREAMS",
        "half of REGISTRY_MAX_WORKERS",
        "open streams in a server process, all callers; below REGISTRY_MAX_WORKERS",
    ),
    Setting(
        "REGISTRY_MAX_CALLS_PER_PRINCIPAL",
        "REGISTRY_MAX_WORKERS less a quarter",
        "threads one caller may hold at once (calls and streams)",
    ),
    Setting("REGISTRY_STREAM_MAX_SECONDS", "600", "a stream's time budget"),
    Setting(
        "REGISTRY_STREAM_STALL_SECONDS",
        "30",
        "a stream whose client reads nothing this long is cancelled",
    ),
    Setting("REGISTRY_KEEPALIVE_SECONDS", "60", "the server pings each connection this often"),
    Setting("REGISTRY_CONNECTION_IDLE_SECONDS", "900", "a connection with no call is closed"),
    Setting(
        "REGISTRY_CONNECTION_AGE_SECONDS",
        "3600",
        "a connection is asked to reconnect after this long",
    ),
    Setting(
        "REGISTRY_PROJECTIONS",
        "in-process (SQLite) / external (PostgreSQL)",
        "who keeps the read models current",
    ),
    Setting("REGISTRY_SERVER_PROCESSES", "1", "server processes sharing the port"),
    Setting("REGISTRY_REUSE_PORT", "", "set by the server for its own processes"),
    Setting("REGISTRY_FOUR_EYES", "required", "required or off"),
    Setting("REGISTRY_AUTH", "token", "token, mtls or token+mtls"),
    Setting(
        "REGISTRY_CREDENTIALS_FILE",
        "$REGISTRY_DATA_DIR/credentials",
        "where the embedded first start writes the first tokens",
    ),
    Setting("REGISTRY_TLS_CERT", "", "the server's certificate chain (PEM)"),
    Setting("REGISTRY_TLS_KEY", "", "the server's private key (PEM)"),
    Setting("REGISTRY_TLS_CLIENT_CA", "", "require client certificates of this CA"),
    Setting("REGISTRY_PLAINTEXT", "", "allow: plaintext off loopback (trusted network)"),
    Setting(
        "REGISTRY_LEDGER_KEY",
        "$REGISTRY_DATA_DIR/ledger-signing-key.pem",
        "the Ed25519 key signing the ledger's checkpoints",
    ),
    Setting("REGISTRY_LEDGER_PUBLIC_KEY", "", "the public key `registry verify` checks with"),
    Setting("REGISTRY_LEDGER_SIGN_SECONDS", "60", "how often the registry signs its head"),
    Setting(
        "REGISTRY_EVENT_KEY",
        "$REGISTRY_DATA_DIR/event-key",
        "the key authenticating every stored event (same file on every server and worker)",
    ),
    Setting(
        "REGISTRY_LEDGER_CHECKPOINTS",
        "$REGISTRY_DATA_DIR/ledger-checkpoints.jsonl",
        "where signed checkpoints are published outside the database",
    ),
    Setting("REGISTRY_METRICS_PORT", "", "serve Prometheus /metrics on this port"),
    Setting("REGISTRY_VERIFY_SECONDS", "3600", "how often the worker re-verifies the ledger"),
    Setting(
        "REGISTRY_VERIFY_FULL_SECONDS",
        "86400",
        "how often that verification is a full one (the others resume where the last ended)",
    ),
    Setting("REGISTRY_LOG_FORMAT", "text", "text or json"),
    Setting("REGISTRY_SERVER", "127.0.0.1:50051", "the server the CLI talks to"),
    Setting("REGISTRY_TOKEN", "", "the CLI's bearer token", secret=True),
    Setting("REGISTRY_TLS_CA", "", "the CLI's CA for a TLS server"),
    Setting("REGISTRY_CLIENT_CERT", "", "the CLI's client certificate"),
    Setting("REGISTRY_CLIENT_KEY", "", "the CLI's client key"),
)
KNOWN = {setting.name: setting for setting in SETTINGS}


def read_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of REGISTRY_* settings; anything else is an error naming the
    line, so a broken file is never half-read."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigurationError(f"{FILE_VARIABLE}: cannot read {path}: {error.strerror}") from None
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        found = LINE.match(line)
        if found is None:
            raise ConfigurationError(f"{path}:{number}: expected REGISTRY_NAME=value")
        value = found.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[found.group(1)] = value
    return values


def load(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Merge the file named by REGISTRY_CONFIG_FILE into ``environ`` (the environment's
    own values win), then read every ``REGISTRY_X_FILE`` into ``REGISTRY_X``
    (``read_setting_files``); return which names came from the config file."""
    environ = os.environ if environ is None else environ
    path = environ.get(FILE_VARIABLE, "").strip()
    added: dict[str, str] = {}
    if path:
        from_file = read_file(Path(path))
        added = {k: v for k, v in from_file.items() if k not in environ}
        environ.update(added)
    read_setting_files(environ)
    return added


FILE_SUFFIX = "_FILE"


def file_setting(name: str) -> str | None:
    """The setting a ``REGISTRY_X_FILE`` name reads from a file (``REGISTRY_X``), if
    ``REGISTRY_X`` is one; settings that already name a file have no ``_FILE`` form."""
    base = name.removesuffix(FILE_SUFFIX)
    if base == name or base not in KNOWN or base.endswith(FILE_SUFFIX):
        return None
    return base


def is_known(name: str) -> bool:
    """A setting, or the ``_FILE`` form of one."""
    return name in KNOWN or file_setting(name) is not None


def read_setting_files(environ: MutableMapping[str, str]) -> dict[str, str]:
    """Set ``REGISTRY_X`` from the file every ``REGISTRY_X_FILE`` names, so a secret
    (the database URL, a token) is mounted from a Secret as a file and never written in
    a pod's environment. One trailing newline is dropped (``echo value > file``). A
    missing, unreadable or empty file, or ``REGISTRY_X`` also set to something else, is
    an error naming both. Returns setting -> the variable it was read by."""
    read: dict[str, str] = {}
    for name in sorted(environ):
        setting = file_setting(name)
        path = environ[name].strip()
        if setting is None or not path:
            continue
        try:
            value = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or str(error)
            raise ConfigurationError(f"{name}: cannot read {path}: {reason}") from None
        value = value.removesuffix("\n").removesuffix("\r")
        if not value.strip():
            raise ConfigurationError(f"{name}: {path} is empty")
        given = environ.get(setting)
        if given is not None and given != value:
            raise ConfigurationError(
                f"{setting} and {name} are both set, to different values: set one"
            )
        environ[setting] = value
        read[setting] = name
    return read


def check(environ: Mapping[str, str] | None = None) -> Settings:
    """Refuse unknown REGISTRY_* names, and every invalid or contradictory value of the
    store's settings (``Settings`` raises those, naming the variable); the server's are
    checked on top by ``registry.bootstrap.check_settings``."""
    environ = os.environ if environ is None else environ
    unknown = sorted(
        name for name in environ if name.startswith("REGISTRY_") and not is_known(name)
    )
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, KNOWN, n=1)
            hints.append(f"{name}" + (f" (did you mean {close[0]}?)" if close else ""))
        raise ConfigurationError(
            f"unknown setting(s): {', '.join(hints)}; `registry config --show` lists them all"
        )
    settings = Settings.from_env(environ)
    if settings.backend in ("postgresql", "postgres"):
        settings.tls_parameters()
    settings.check_read_replica()
    return settings


def effective(
    environ: Mapping[str, str] | None = None, from_file: Mapping[str, str] = {}
) -> list[tuple[str, str, str]]:
    """(name, value shown, source) of every setting; secrets masked."""
    environ = os.environ if environ is None else environ
    rows = []
    for setting in SETTINGS:
        if setting.name in environ:
            value = environ[setting.name]
            source = "file" if setting.name in from_file else "environment"
        else:
            value, source = setting.default, "default"
        rows.append((setting.name, mask(setting, value) if source != "default" else value, source))
    return rows


def mask(setting: Setting, value: str) -> str:
    """A secret's value as ``***``; a database URL keeps all but its password."""
    if not value or not setting.secret:
        return value
    if setting.name in ("REGISTRY_DATABASE_URL", "REGISTRY_READ_DATABASE_URL"):
        return mask_url(value)
    return "***"


_HOST = re.compile(r"[A-Za-z0-9.\-_\[\]:%,]*(?:[/?]|$)")
"""What follows the userinfo's ``@``: host[:port][,host[:port]...], then a path or query."""
_QUERY_SECRET = re.compile(r"([?&](?:ssl)?password=)[^&]*", re.IGNORECASE)


def mask_url(url: str) -> str:
    """A database URL with every password shown as ``***``: the userinfo's, written
    raw or not (``#``, ``@``, ``/`` or ``?`` in it break ``urlsplit``, which then finds
    no password and the URL was printed whole), and ``password=`` / ``sslpassword=`` in
    the query. Used wherever a URL is shown (``registry config``, the start-up log,
    errors)."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return _mask_query(url)
    # The userinfo ends at the last "@" that a host (and then a path, query or the end)
    # follows: a raw "@" inside the password comes before it.
    for at in range(len(rest) - 1, -1, -1):
        if rest[at] == "@" and _HOST.match(rest, at + 1):
            user, colon, _ = rest[:at].partition(":")
            userinfo = f"{user}:***" if colon else user
            return f"{scheme}://{userinfo}@{_mask_query(rest[at + 1 :])}"
    return f"{scheme}://{_mask_query(rest)}"


def _mask_query(text: str) -> str:
    return _QUERY_SECRET.sub(r"\1***", text)


def verify_seconds(environ: Mapping[str, str] | None = None) -> float:
    """REGISTRY_VERIFY_SECONDS: how often the lease holder re-verifies the whole ledger
    (default 3600; 0 never)."""
    environ = os.environ if environ is None else environ
    text = environ.get("REGISTRY_VERIFY_SECONDS", "").strip() or "3600"
    try:
        return float(text)
    except ValueError:
        raise ConfigurationError(f"REGISTRY_VERIFY_SECONDS must be seconds, got {text!r}") from None


def verify_full_seconds(environ: Mapping[str, str] | None = None) -> float:
    """REGISTRY_VERIFY_FULL_SECONDS: how long after the last full verification the
    worker's next run is full again (default 86400); the runs between resume where the
    last one ended. 0: every run is full."""
    environ = os.environ if environ is None else environ
    text = environ.get("REGISTRY_VERIFY_FULL_SECONDS", "").strip() or "86400"
    try:
        value = float(text)
    except ValueError:
        raise ConfigurationError(
            f"REGISTRY_VERIFY_FULL_SECONDS must be seconds, got {text!r}"
        ) from None
    if value < 0:
        raise ConfigurationError(f"REGISTRY_VERIFY_FULL_SECONDS must be 0 or more, got {text!r}")
    return value


def log_format(environ: Mapping[str, str] | None = None) -> str:
    """``REGISTRY_LOG_FORMAT``: ``text`` (the default) or ``json``, for every long-running
    process (server and projection worker) alike."""
    value = (os.environ if environ is None else environ).get("REGISTRY_LOG_FORMAT", "")
    value = value.strip() or "text"
    if value not in ("text", "json"):
        raise ConfigurationError(f"REGISTRY_LOG_FORMAT must be text or json, got {value!r}")
    return value
