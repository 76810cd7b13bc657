"""The daemon's configuration file: typed, frozen, and strict.

Unknown keys and wrong types are refused at start with the key's path and what
was expected; every key has a default, documented in ``config.example.yaml``.
"""

import enum
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

from harper_certd import warmstart
from harper_certd.errors import ConfigError
from harper_certd.harper.method import RestartMethod
from harper_certd.roles import default_root
from harper_certd.yamlfile import read_yaml

OnInvalidLive = Literal["report", "restore"]


class HarperSection(NamedTuple):
    root: Path | None = None  # Harper's ROOTPATH; default $ROOTPATH, then ~/hdb
    # PEM bundle of the roots a set without a CA file must chain to; default OpenSSL's own
    # ($SSL_CERT_FILE / $SSL_CERT_DIR, else the built-in paths): see trust.py.
    trust_store: Path | None = None


class RestartSection(NamedTuple):
    method: RestartMethod = RestartMethod.AUTO  # the enum's values are the accepted spellings
    command: tuple[str, ...] = ()  # argv for method "command"; never a shell string
    unit: str = "harperdb"  # for method "systemd"
    timeout: float = 120.0  # seconds a restart command may take
    restarts_per_hour: int = 3


class VerifySection(NamedTuple):
    enabled: bool = True  # false: trust the restart method's own success (exit status)
    timeout: float = 60.0  # seconds for Harper to serve the new certificate
    interval: float = 0.5  # between TLS handshakes while waiting
    host: str | None = None  # address to dial; default 127.0.0.1, then ::1 (SNI: as peers)


class OperationsApiSection(NamedTuple):
    url: str | None = None  # http(s)://host:port or unix:/path; default from Harper's config
    credentials_file: Path | None = None  # "username:password", readable by the daemon only
    username_env: str = "HARPER_CERTD_USERNAME"
    password_env: str = "HARPER_CERTD_PASSWORD"  # noqa: S105 - a variable name, not a secret


class WatchSection(NamedTuple):
    settle_seconds: float = 2.0  # files must stop changing this long before a set is taken
    rescan_seconds: float = 3600.0  # full rescan, a safety net beside inotify
    # incoming/ under hostile input (h-incoming):
    loose_wait_seconds: float = 300.0  # an incomplete loose set waits this long for a warning
    drain_per_cycle: int = 50  # sources judged per loop cycle at most (event storms)


class ExpirySection(NamedTuple):
    warn_days: tuple[float, ...] = (30, 14, 7, 3, 1)


class RenewSection(NamedTuple):
    command: tuple[str, ...] = ()  # e.g. [certbot, renew, --cert-name, x]; empty: no renewal
    before_fraction: float = 1 / 3  # renew when this share of the lifetime is left
    before_days: float | None = None  # or a fixed number of days before expiry
    timeout: float = 300.0
    lineage_dir: Path | None = None  # a certbot live/<name> folder to take results from
    backoff_initial: float = 60.0
    backoff_max: float = 3600.0
    # After the command exits 0, a new set must arrive (incoming/ or lineage_dir) and be
    # installed within this many seconds, or the renewal counts as failed.
    arrival_seconds: float = 60.0


class ScheduleSection(NamedTuple):
    # A set whose notBefore is at most this far ahead (a CA's clock running fast) is held
    # and installed when it becomes valid; further ahead it is refused (not_yet_valid).
    hold_not_yet_valid_seconds: float = 600.0
    # A swap that could not be written (disk full, read-only state) is retried after
    # swap_retry_initial seconds, doubling up to swap_retry_max.
    swap_retry_initial: float = 30.0
    swap_retry_max: float = 1800.0


# --- h-store's keys (the store and filed sources) ---------------------------------------


class RetentionSection(NamedTuple):
    """Sets filed in processed/ and rejected/ (each holds a private key): how many, how long."""

    keep: int = 20  # the newest folders kept in each of processed/ and rejected/
    days: float | None = 90.0  # older folders are removed (the newest one never); null: no limit


# --- end of h-store's keys ----------------------------------------------------------------


class LogSection(NamedTuple):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


# --- h-ops: monitoring (status health, the Prometheus textfile) -------------------------


class HealthSection(NamedTuple):
    # The first expiry warning fires when this share of the leaf's renewal window (from
    # renew.before_fraction/before_days to notAfter) has passed without a new set.
    overdue_after: float = 0.5


class MetricsSection(NamedTuple):
    textfile: Path | None = None  # node_exporter textfile (*.prom); null: no metrics
    interval: float = 60.0  # seconds between re-checks of what Harper serves (and rewrites)


# --- h-peers: the cluster citizen (issue 12) -------------------------------------------


class PeersSection(NamedTuple):
    # auto: before and after a replication-set swap, probe every replication peer listed by
    # the Operations API (harper_certd.peers); off: never.
    check: Literal["auto", "off"] = "auto"
    timeout: float = 5.0  # seconds per probe (TCP, TLS, WebSocket, verdict)
    # A peer that cannot be reached before a swap: "hold" (retry every retry_seconds for at
    # most hold_seconds) or "refuse" (no retries in the call).  Then a set the peer already
    # trusts goes ahead (certd.peer_unreachable_trusted); any other is held and re-tried by
    # the daemon every retry_seconds until the peer answers or the live leaf reaches its last
    # expiry.warn_days threshold (certd.set_held_for_peers, certd.peer_hold_expired).
    unreachable: Literal["hold", "refuse"] = "hold"
    hold_seconds: float = 120.0
    retry_seconds: float = 10.0
    # Before a full restart of Harper: wait at most this long (with jitter) for every peer
    # to be connected (certd.restart_deferred), then restart anyway with a warning.  Also how
    # long the proof after a swap retries a peer that cannot be reached (it may be restarting).
    restart_wait_seconds: float = 60.0


# --- end of h-peers' keys -----------------------------------------------------------------


class SetSection(NamedTuple):
    """What differs per certificate set (issue 11); ``name`` as ``harper-certd check``
    shows it (the ``tls`` entry's ``name``, else its role, else its position)."""

    name: str = ""
    # This set's renewal; the top-level ``renew`` is the primary (replication) set's.
    renew: RenewSection = RenewSection()


class JudgeSection(NamedTuple):
    # The node that judges sets when Harper is not running here (Harper's own node, read
    # from its process, comes first): a path, "none" for harper-certd's model alone, or
    # null for PATH's node (harper_certd.judge.runtime).
    node: str | None = None


class Config(NamedTuple):
    harper: HarperSection = HarperSection()
    judge: JudgeSection = JudgeSection()
    incoming_dir: Path | None = None  # default <harper.root>/keys/incoming
    processed_dir: Path | None = None  # default <harper.root>/keys/processed
    rejected_dir: Path | None = None  # default <harper.root>/keys/rejected
    state_dir: Path | None = None  # default $STATE_DIRECTORY, then /var/lib/harper-certd
    generations_kept: int = 5
    ca_file: Path | None = None  # CA file for sources without ca.pem; default: the live ca.pem
    expiry_warning_days: float = 30.0  # validation's expires_soon window
    on_invalid_live: OnInvalidLive = "report"
    restart: RestartSection = RestartSection()
    verify: VerifySection = VerifySection()
    operations_api: OperationsApiSection = OperationsApiSection()
    watch: WatchSection = WatchSection()
    expiry: ExpirySection = ExpirySection()
    renew: RenewSection = RenewSection()
    schedule: ScheduleSection = ScheduleSection()
    log: LogSection = LogSection()
    health: HealthSection = HealthSection()  # h-ops
    metrics: MetricsSection = MetricsSection()  # h-ops
    retention: RetentionSection = RetentionSection()
    peers: PeersSection = PeersSection()  # h-peers
    sets: tuple[SetSection, ...] = ()  # per-set settings, by set name


class Paths(NamedTuple):
    """Every directory the daemon uses, with the defaults resolved."""

    harper_root: Path
    incoming: Path
    processed: Path
    rejected: Path
    state: Path


def absolute(path: Path) -> Path:
    """``path`` with ``~`` expanded, made absolute against the working directory now.

    Every path from the configuration, the command line and the environment goes through
    here once, where it is given (issue 17): a relative ``--state-dir`` made the live links,
    which name the state directory, dangle from the keys folder they are in.  Not resolved:
    links in it stay links (``Path.absolute``).
    """
    return path.expanduser().absolute()


def resolve_paths(config: Config, env: Mapping[str, str] | None = None) -> Paths:
    """Every directory, absolute (``absolute``), defaults filled in."""
    env = os.environ if env is None else env

    root = absolute(config.harper.root or default_root(env))
    keys = root / "keys"
    state = config.state_dir or Path(
        env.get("STATE_DIRECTORY", "").split(":")[0] or "/var/lib/harper-certd"
    )
    return Paths(
        harper_root=root,
        incoming=absolute(config.incoming_dir or keys / "incoming"),
        processed=absolute(config.processed_dir or keys / "processed"),
        rejected=absolute(config.rejected_dir or keys / "rejected"),
        state=absolute(state),
    )


# --- the loader ------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return " or ".join(repr(m.value) for m in tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    if tp is Path:
        return "a path"
    if tp is float:
        return "a number"
    if tp is int:
        return "an integer"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    if _is_section(tp):
        return "a mapping"
    return str(tp)


def _is_section(tp: Any) -> bool:
    """Whether ``tp`` is one of the sections above (a NamedTuple: a mapping in the file)."""
    return isinstance(tp, type) and issubclass(tp, tuple) and hasattr(tp, "_fields")


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _convert(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
    elif origin is Literal:
        options = typing.get_args(tp)
        # YAML 1.1 reads an unquoted off/no (on/yes) as a boolean: `check: off` means "off"
        if isinstance(value, bool) and ("on" if value else "off") in options:
            return "on" if value else "off"
        if not isinstance(value, bool) and value in options:
            return value
    elif isinstance(tp, type) and issubclass(tp, enum.Enum):
        if any(value == m.value for m in tp):
            return tp(value)
    elif origin is tuple:
        if isinstance(value, list):
            item = typing.get_args(tp)[0]
            return tuple(_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    elif _is_section(tp):
        return _build(tp, value, where)
    elif tp is Path:
        if isinstance(value, str) and value:
            return absolute(Path(value))
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str and isinstance(value, str):
        return value
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def _build(cls: type[Any], data: Any, where: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'the configuration'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = set(cls._fields)
    for key in data:
        if key not in known:
            path = f"{where}.{key}" if where else str(key)
            raise ConfigError(f"{path}: unknown key (known here: {', '.join(sorted(known))})")
    kwargs = {
        key: _convert(value, hints[key], f"{where}.{key}" if where else key)
        for key, value in data.items()
    }
    return cls(**kwargs)


def _check(config: Config) -> Config:
    names = [s.name for s in config.sets]
    if "" in names:
        raise ConfigError("sets: every entry needs a name (the set's name in `harper-certd check`)")
    if len(set(names)) != len(names):
        raise ConfigError(f"sets: a set is named twice ({', '.join(names)})")
    if config.generations_kept < 2:
        raise ConfigError("generations_kept: must be 2 or more (the live set and the one before)")
    if config.restart.method == RestartMethod.COMMAND and not config.restart.command:
        raise ConfigError("restart.command: must name an argv list when restart.method is command")
    if config.retention.keep < 1:
        raise ConfigError("retention.keep: must be 1 or more")
    if config.retention.days is not None and config.retention.days <= 0:
        raise ConfigError("retention.days: must be more than 0, or null for no age limit")
    if config.restart.restarts_per_hour < 1:
        raise ConfigError("restart.restarts_per_hour: must be 1 or more")
    if not 0 < config.renew.before_fraction < 1:
        raise ConfigError("renew.before_fraction: must be between 0 and 1")
    if not 0 <= config.health.overdue_after < 1:  # h-ops
        raise ConfigError("health.overdue_after: must be at least 0 and below 1")
    if not 5 <= config.metrics.interval <= 60:  # h-ops
        raise ConfigError("metrics.interval: must be between 5 and 60 seconds")
    if config.schedule.hold_not_yet_valid_seconds < 0:
        raise ConfigError("schedule.hold_not_yet_valid_seconds: must be 0 or more")
    if not 0 < config.schedule.swap_retry_initial <= config.schedule.swap_retry_max:
        raise ConfigError("schedule.swap_retry_initial: must be above 0 and at most swap_retry_max")
    return config


def parse_config(data: Any, source: str = "configuration") -> Config:
    try:
        config: Config = _build(Config, data, "")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return _check(config)


# --- h-ops: the default configuration path, the same for every command -----------------

# Defined in warmstart (a leaf the console script loads first): its guess at a status' judge
# reads the same file.
DEFAULT_CONFIG_PATH = Path(warmstart.DEFAULT_CONFIG)
CONFIG_ENV = warmstart.CONFIG_ENV


def default_config_path(env: Mapping[str, str] | None = None) -> Path | None:
    """``$HARPER_CERTD_CONFIG`` (which must exist), else /etc/harper-certd/config.yaml if it
    exists, else None (every default)."""
    env = os.environ if env is None else env
    if env.get(CONFIG_ENV):
        return absolute(Path(env[CONFIG_ENV]))
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.is_file() else None


def load_config(path: Path | None) -> Config:
    """The configuration at ``path``; all defaults when ``path`` is None."""
    if path is None:
        return parse_config({})
    return parse_config(read_yaml(path), str(path))


_T = typing.TypeVar("_T")


def with_overrides(section: _T, **changes: Any) -> _T:
    """Command-line flags override the file (None: not given); a path made absolute
    (``absolute``) here, where the command line gives it."""
    given = {k: absolute(v) if isinstance(v, Path) else v for k, v in changes.items()}
    replaced: _T = section._replace(  # type: ignore[attr-defined]
        **{k: v for k, v in given.items() if v is not None}
    )
    return replaced
