"""All configuration, from the environment (``CBCM_*``), in one place."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, FilePath, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Embedded defaults: everything under ``./.cbcm``, SQLite event store."""

    model_config = SettingsConfigDict(env_prefix="CBCM_", extra="ignore")

    data_dir: Path = Field(default=Path(".cbcm"), description="where embedded state lives")
    event_store: str | None = Field(
        default=None,
        description="'sqlite:///PATH' or 'postgresql://...'; default: a SQLite file in data_dir",
    )
    event_store_pool_size: int = Field(
        default=5,
        ge=1,
        le=100,
        description="PostgreSQL event store: the connections each process keeps open to it; "
        "under load its pool opens up to 10 more, closed again after 10 idle minutes",
    )
    read_model_store: str | None = Field(
        default=None,
        description="where the read models live: unset (or 'sqlite'): SQLite files under "
        "data_dir/read_models; 'postgresql://...': a schema per read model in that database "
        "(cbcm_inbox, cbcm_assistance, cbcm_stats; with '?schema=NAME', NAME_inbox...; ADR 16)",
    )
    nats_url: str | None = Field(
        default=None, description="an existing NATS; when unset `cbcm serve` starts its own"
    )
    embedded_nats_port: int = Field(
        default=14222,
        ge=1,
        le=65535,
        description="port of the nats-server `cbcm serve` starts (away from the standard 4222)",
    )
    nats_replicas: int = Field(default=1, ge=1, le=5, description="replicas of CBCM_EVENTS")
    read_wait_seconds: float = Field(
        default=5.0, gt=0, le=60, description="how long a read with ?after= waits"
    )
    http_addr: str = "127.0.0.1:8080"
    metrics_addr: str | None = Field(
        default=None,
        description="HOST:PORT where a worker (relay, projector, checkpoint publisher, witness) "
        "serves its Prometheus metrics; unset: not served (`cbcm serve` gives each one a port)",
    )
    log_format: Literal["json", "console"] = "console"

    # --- identity (issue #4) ---
    oidc_issuer: str | None = Field(
        default=None,
        description="the network's OIDC issuer; when set, tokens are verified against its JWKS "
        "instead of the local signing key",
    )
    oidc_audience: str = Field(default="cbcm", description="the audience tokens must name")
    oidc_jwks_url: str | None = Field(
        default=None,
        description="the provider's JWKS URL (default: the jwks_uri of the issuer's OIDC "
        "discovery document, <issuer>/.well-known/openid-configuration)",
    )
    oidc_algorithms: str = Field(
        default="RS256,ES256,EdDSA", description="comma-separated signature algorithms accepted"
    )
    oidc_agency_claim: str = Field(
        default="agency",
        description="claim carrying the agency code; a dotted path reaches into nested claims",
    )
    oidc_roles_claim: str = Field(
        default="roles",
        description="claim carrying the cbcm roles; a dotted path reaches into nested claims "
        "(Keycloak: realm_access.roles)",
    )
    oidc_require_access_token_type: bool = Field(
        default=False,
        description="refuse tokens whose header is not typ: at+jwt (RFC 9068 access tokens), "
        "so that an ID token of the same provider is not taken as an access token",
    )
    # --- the staff console (issue #21, ADR 24) ---
    console_oidc_client_id: str | None = Field(
        default=None,
        description="the console's client id at the OIDC provider (needed with "
        "CBCM_OIDC_ISSUER; the console then signs staff in there)",
    )
    console_oidc_client_secret: str | None = Field(
        default=None,
        description="its client secret, for a confidential client; unset: a public client "
        "(PKCE alone)",
    )
    console_oidc_scopes: str = Field(
        default="openid", description="the scopes the console asks for, space-separated"
    )
    console_oidc_resource: str | None = Field(
        default=None,
        description="the resource indicator (RFC 8707) sent with the authorization and token "
        "requests, for providers that issue JWT access tokens per resource",
    )
    console_url: str | None = Field(
        default=None,
        description="the console's public base URL as browsers reach it, e.g. "
        "https://cbcm.example.org (the OIDC redirect is <url>/console/sign-in/callback; "
        "https makes the session cookie Secure); unset: taken from each request",
    )
    console_development_sign_in: bool = Field(
        default=True,
        description="without an identity provider, offer the development sign-in (it issues "
        "a local token for any account typed in) to browsers on this machine only; never over "
        "an https console URL; false: no sign-in at all without CBCM_OIDC_ISSUER",
    )
    console_session_hours: float = Field(
        default=8,
        gt=0,
        le=24,
        description="how long a console session lasts at most (the token's own expiry ends "
        "it sooner)",
    )
    # --- anonymous complainants and public endpoints (issue #4) ---
    receipt_failures_per_locator: int = Field(
        default=5,
        ge=1,
        description="failed receipt look-ups of a locator per window before look-ups of it are "
        "held (slowed down, never refused: issue #20)",
    )
    receipt_slowdown_base_seconds: float = Field(
        default=0.25, gt=0, description="the first hold of a look-up of a locator past its failures"
    )
    receipt_slowdown_max_seconds: float = Field(
        default=2.0,
        gt=0,
        le=30,
        description="the longest a look-up of a locator is held (each further failure doubles "
        "the hold up to this): the longest the owner of a code waits however it is attacked",
    )
    receipt_failures_per_client: int = Field(
        default=20, ge=1, description="failed receipt look-ups allowed per client per window"
    )
    receipt_failure_window_seconds: int = Field(
        default=900, ge=1, description="the window of the receipt look-up throttle"
    )
    public_intake_per_client: int = Field(
        default=10, ge=1, description="public web-form complaints accepted per client per window"
    )
    public_intake_window_seconds: int = Field(
        default=3600, ge=1, description="the window of the public intake rate limit"
    )
    public_pages_agency: str = Field(
        default="",
        pattern=r"^([a-z0-9][a-z0-9_-]{0,31})?$",
        description="the agency that receives what the public pages (/report, /feedback) send; "
        "empty: the complainant chooses among the network's agencies",
    )
    # --- the HTTP edge (issue #16) ---
    trusted_proxies: str = Field(
        default="",
        description="comma-separated addresses or networks (CIDR) of the proxies in front of "
        "the API whose X-Forwarded-For is believed: the client is the right-most address no "
        "listed proxy wrote; empty (default): X-Forwarded-For is never believed",
    )
    throttle_store: str = Field(
        default="memory://",
        description="where the public throttles count: 'memory://' (this process only) or "
        "'redis://HOST:PORT/DB' (rediss:// for TLS), shared by every API instance",
    )
    throttle_key_prefix: str = Field(
        default="cbcm-throttle",
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="prefix of every key the throttles write in a shared store",
    )
    max_body_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        description="the largest request body accepted (bytes); larger ones are refused 413 "
        "before they are read (the largest legitimate one, a complaint with every text at its "
        "longest, escaped, is about 220 KB)",
    )
    api_metrics_addr: str = Field(
        default="127.0.0.1:9180",
        description="HOST:PORT where `cbcm api` serves its Prometheus metrics (never on the API "
        "port); empty: not served",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        for entry in (e.strip() for e in value.split(",")):
            if entry:
                try:
                    network = ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    raise ValueError(f"{entry!r} is not an address or a network") from None
                if network.prefixlen == 0:
                    # every client could then choose the address it is counted under
                    raise ValueError(
                        f"{entry!r} would trust every address: list the proxies themselves"
                    )
        return value

    def trusted_proxy_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [
            ipaddress.ip_network(entry.strip(), strict=False)
            for entry in self.trusted_proxies.split(",")
            if entry.strip()
        ]

    # --- signed audit checkpoints (issue #5) ---
    audit_signing_key_file: Path | None = Field(
        default=None,
        description="PEM Ed25519 private key the checkpoint publisher signs with; default: "
        "<data_dir>/keys/audit-signing-key.pem, created on first use",
    )
    audit_public_key_file: Path | None = Field(
        default=None,
        description="PEM Ed25519 public key witnesses and `audit verify` check checkpoints "
        "with; default: the public half of the signing key",
    )
    audit_log_origin: str | None = Field(
        default=None,
        description="the network's log identity, the origin line of every checkpoint (issue "
        "#15); default: <data_dir>/keys/audit-log-origin, created once at random on first use",
    )
    witness_dir: Path | None = Field(
        default=None,
        description="where a witness keeps its book and its cosigning key; default: "
        "$XDG_STATE_HOME/cbcm/witness (~/.local/state/cbcm/witness), never beside the data dir",
    )
    audit_witnesses: str = Field(
        default="",
        description="the witnesses `audit verify` asks cosignatures of: their cosigner vkeys "
        "(<name>+<id>+<key>), separated by commas or spaces",
    )
    audit_quorum: int | None = Field(
        default=None,
        ge=0,
        description="how many of CBCM_AUDIT_WITNESSES must cosign a checkpoint; default: all",
    )
    checkpoint_events: int = Field(
        default=1000, ge=1, description="sign a checkpoint when the head moved this many positions"
    )
    checkpoint_seconds: float = Field(
        default=30.0, gt=0, description="sign a checkpoint this often when the head moved"
    )
    # --- personal data at rest (issue #6) ---
    kek_dir: Path | None = Field(
        default=None,
        description="directory of the key-encryption keys that wrap the data keys; default: "
        "<data_dir>/keys/kek, created on first use (an explicitly named one must exist)",
    )
    kms_hook: str | None = Field(
        default=None,
        description="'package.module:factory' of a KMS client that wraps and unwraps data keys "
        "instead of the local key ring",
    )
    data_key_cache_seconds: float = Field(
        default=10.0,
        ge=0,
        le=300,
        description="how long an unwrapped data key is kept in memory",
    )
    event_cipher: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="the library's whole-event cipher over every stored event (auto: on for "
        "PostgreSQL, off for the embedded SQLite store)",
    )
    event_cipher_key_file: Path | None = Field(
        default=None,
        description="the whole-event cipher's AES-256 key (base64); default: "
        "<data_dir>/keys/event-cipher.key, created on first use",
    )
    # --- writer marks (issue #15) ---
    writer_key_file: Path | None = Field(
        default=None,
        description="the key (32 random bytes, base64) every process that writes events marks "
        "each commit with, and `audit verify` and the checkpoint publisher check the marks "
        "with; kept out of the database, apart from the checkpoint key; default: "
        "<data_dir>/keys/writer.key, created on first use (an explicitly named one must exist)",
    )
    erasure_ledger_dir: Path | None = Field(
        default=None,
        description="where every process keeps, outside the database, the erasures it saw, the "
        "last signed head and a kept writer start (ADR 23): writable by the services, backed up "
        "with the keys, never with the database; default: <data_dir>/keys",
    )
    # --- the event store's tables (issue #5) ---
    create_tables: bool = Field(
        default=True,
        description="embedded SQLite store only: create its missing tables at start (from "
        "the versioned schema files); false: only check its schema version. A PostgreSQL "
        "store's tables are made by `cbcm db migrate`, never at start",
    )
    # --- sealed shares (issue #6) ---
    shares_max_age_days: float = Field(
        default=30.0,
        gt=0,
        description="how long stream CBCM_SHARES keeps a share of personal data sealed to an "
        "agency's key before it expires (days)",
    )
    # --- NATS credentials and TLS (issue #6) ---
    nats_nkey_seed_file: FilePath | None = Field(
        default=None,
        description="this service's nkey seed (a file holding the SU... line `cbcm nats setup` "
        "writes); unset: no credentials (the embedded nats-server of `cbcm serve`)",
    )
    nats_tls_ca_file: FilePath | None = Field(
        default=None,
        description="PEM CA certificates to verify the NATS server's with; when set, or with a "
        "client certificate, the connection is TLS",
    )
    nats_tls_cert_file: FilePath | None = Field(
        default=None, description="PEM client certificate, for a server that verifies clients"
    )
    nats_tls_key_file: FilePath | None = Field(
        default=None, description="PEM key of the client certificate (default: in the cert file)"
    )
    nats_inbox_prefix: str | None = Field(
        default=None,
        pattern=r"^_INBOX\.[a-z0-9_-]+$",
        description="prefix of this client's reply subjects; default with a seed file: "
        "_INBOX.<service> (relay, project-inbox, audit-witness...), as deploy/nats grants; "
        "an agency's credentials: _INBOX.<agency>",
    )
    nats_js_api_prefix: str | None = Field(
        default=None,
        description="JetStream API prefix; JS.CBCM.API for an agency's credentials (an agency "
        "running `cbcm audit witness`)",
    )
    # --- NATS cluster and relay leadership (issue #7) ---
    relay_leader_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="how often a standby relay tries to take the leader lock (the longest a "
        "takeover waits once the leader is gone)",
    )
    relay_leader_check_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="how often the leading relay checks that it still holds the leader lock "
        "(it stops publishing at the first check that fails)",
    )
    relay_translator_process: bool | None = Field(
        default=None,
        description="the relay reads and translates the event store's log in a process of its "
        "own, while its main process publishes (two cores at work on a backlog; ADR 31); "
        "false: in a thread of its one process; unset: true for `cbcm relay`, false where the "
        "relay runs inside another process (`cbcm serve`)",
    )
    # --- statistics releases (issue #14) ---
    stats_release_period: Literal["month", "quarter", "year"] = Field(
        default="quarter", description="what one statistics release covers"
    )
    stats_embargo_days: float = Field(
        default=30,
        ge=0,
        le=366,
        description="how long after its period ends a statistics release waits",
    )
    stats_window_months: int = Field(
        default=24,
        ge=1,
        le=120,
        description="periods that ended longer ago are neither released nor revised",
    )
    stats_revise_every_days: float = Field(
        default=30,
        ge=0,
        le=366,
        description="the least time between two versions of one statistics release",
    )
    stats_upper_protection: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="upper protection level of a withheld count (default: the threshold)",
    )
    stats_lower_protection: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="lower protection level of a withheld count (default: the threshold)",
    )
    # --- intake from other tools (issue #19, ADR 17) ---
    intake_key_file: Path | None = Field(
        default=None,
        description="the key that turns a tool's submission id into an Idempotency-Key "
        "(32+ random bytes; every API instance shares it); default: "
        "<data_dir>/keys/intake.key, created on first use",
    )
    # --- signed webhooks (issue #19, ADR 17) ---
    webhook_disable_after_days: float = Field(
        default=5,
        gt=0,
        le=90,
        description="an endpoint that failed every delivery for this long is disabled (and "
        "the coordinator told, by an event in the log)",
    )
    webhook_retry_first_seconds: float = Field(
        default=5, gt=0, le=3600, description="the wait before a failed delivery's first retry"
    )
    webhook_retry_most_seconds: float = Field(
        default=3600,
        gt=0,
        le=86400,
        description="the longest wait between two attempts of one delivery (the waits double)",
    )
    webhook_timeout_seconds: float = Field(
        default=10, gt=0, le=120, description="how long one delivery waits for its answer"
    )
