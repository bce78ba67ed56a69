"""Process settings from the environment (docs/deployment.md), validated once at start."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from jit_lb.access.connections import RedisAddress, parse_sentinels
from jit_lb.access.errors import SettingsError


class Settings(BaseSettings):
    """Every variable in docs/deployment.md (Environment); names are the variables' own, case-insensitive."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, frozen=True)

    slack_bot_token: SecretStr
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    redis_url: str = "redis://localhost:6379/0"
    # Set: the master named REDIS_SENTINEL_MASTER is found through these Sentinels (host:port, comma-separated),
    # and followed across failovers; REDIS_URL then gives only the database number and password.
    redis_sentinels: str | None = None
    redis_sentinel_master: str = Field(default="mymaster", min_length=1)
    jit_policy_file: str = "policy.yml"
    jit_audit_log: str = "-"
    jit_audit_key: SecretStr | None = None  # the audit chain's HMAC key; unset or empty: SHA-256, with a warning
    jit_sweep_interval: float = Field(default=60.0, gt=0, le=3600)
    port: int = Field(default=3000, ge=1, le=65535)
    # Prometheus metrics (docs/metrics.md): the web serves /metrics on PORT; a worker on JIT_METRICS_PORT when set.
    jit_metrics: bool = True  # false: nothing is counted and no /metrics is served (the bench's comparison)
    jit_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    # Where a worker's /metrics listens; the web serves on all interfaces too.
    jit_metrics_host: str = "0.0.0.0"  # noqa: S104
    jit_queue: str = "jit"
    jit_log_level: str = "INFO"
    jit_mfa_key: SecretStr | None = None  # a Fernet key; required when any target requires MFA
    # PagerDuty's REST API, asked live for auto-approval from on-call (docs/approvals.md); read-only is enough.
    pagerduty_token: SecretStr | None = None
    pagerduty_api_url: str = "https://api.pagerduty.com"
    # How long before its end a grant's requester is warned; only grants twice as long get a warning.
    jit_warn_before: float = Field(default=300.0, gt=0)
    # Seconds between a failed revoke's retries, comma-separated; the sweep keeps trying after them.
    jit_revoke_retry_intervals: str = "1,2,5,10,30"
    # The fixed margin of each grant's revoke lead (seconds): the loop's tick, a worker taking the job, and jitter.
    jit_revoke_lead: float = Field(default=1.0, ge=0, le=60)
    # What a revoke job is assumed to cost until the workers' own jobs have been measured (the lead adds the work
    # ahead at these costs): seconds from its start until access is gone, and seconds on each grant after that.
    jit_revoke_job_seconds: float = Field(default=0.5, gt=0, le=10)
    jit_revoke_grant_seconds: float = Field(default=0.02, ge=0, le=1)

    @field_validator("slack_bot_token")
    @classmethod
    def _bot_token(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith("xoxb-"):
            raise ValueError("must be a bot token starting with xoxb-")
        return value

    @field_validator("slack_app_token")
    @classmethod
    def _app_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            return None
        if value is not None and not value.get_secret_value().startswith("xapp-"):
            raise ValueError("must be an app-level token starting with xapp-")
        return value

    @field_validator("slack_api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value if value.endswith("/") else value + "/"

    @field_validator("pagerduty_api_url")
    @classmethod
    def _pagerduty_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinels(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not parse_sentinels(value):
            raise ValueError("must name at least one Sentinel as host:port")
        return value

    @field_validator("jit_log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return value.upper()

    @field_validator("jit_revoke_retry_intervals")
    @classmethod
    def _retry_intervals(cls, value: str) -> str:
        parts = [part.strip() for part in value.split(",") if part.strip()]
        if not parts or not all(part.isdigit() for part in parts):
            raise ValueError("must be whole seconds separated by commas, e.g. 1,2,5,10,30")
        return ",".join(parts)

    @property
    def redis(self) -> RedisAddress:
        """Where Redis is: REDIS_URL, or the Sentinels and the master's name."""
        sentinels = parse_sentinels(self.redis_sentinels) if self.redis_sentinels else ()
        return RedisAddress(self.redis_url, sentinels, self.redis_sentinel_master)

    @property
    def socket_mode(self) -> bool:
        return self.slack_app_token is not None

    @property
    def revoke_retry_intervals(self) -> list[int]:
        """Seconds between a failed revoke's retries, each at least one."""
        return [max(1, int(part)) for part in self.jit_revoke_retry_intervals.split(",")]

    @property
    def warn_before(self) -> timedelta:
        return timedelta(seconds=self.jit_warn_before)


def load_settings(web: bool = False) -> Settings:
    """Read the environment; raise SettingsError naming the first bad variable.

    `web` adds what only the web process needs: the signing secret, in HTTP mode.
    """
    try:
        settings = Settings()
    except ValidationError as err:
        first = err.errors()[0]
        name = str(first["loc"][0]).upper() if first["loc"] else ""
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "missing":
            message = "is required"
        prefix = f"{name}: " if name else ""
        raise SettingsError(f"{prefix}{message}") from None
    secret = settings.slack_signing_secret
    if web and not settings.socket_mode and not (secret and secret.get_secret_value()):
        raise SettingsError("SLACK_SIGNING_SECRET: is required in HTTP mode (when SLACK_APP_TOKEN is not set)")
    return settings
