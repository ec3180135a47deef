//! `[api]` in the config file: where the API listens and who may call it.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// What a bearer token may do. Scopes do not imply each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Every `GET` under `/api`, `/param`.
    #[serde(rename = "ml:read")]
    Read,
    /// Submit, cancel, retry and rerun trainings; post trade outcomes.
    #[serde(rename = "ml:train")]
    Train,
    /// Promote and roll back models; decide flags; register presets.
    #[serde(rename = "ml:write")]
    Write,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "ml:read",
            Scope::Train => "ml:train",
            Scope::Write => "ml:write",
        }
    }
}

/// One accepted token, by the SHA-256 of its secret (never the secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it; recorded as the actor of what the token does.
    pub name: String,
    /// Hex SHA-256 of the token (`autotrain token` makes one).
    pub sha256: String,
    pub scopes: Vec<Scope>,
    /// The tenant the token acts for; `*` = every tenant (platform ops;
    /// needed for platform-wide resources: flags, presets, outcomes).
    pub tenant: String,
}

/// `[api]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address to listen on.
    pub bind: String,
    /// No authentication: every caller is a platform token with every
    /// scope. Only allowed on a loopback address.
    pub dev_mode: bool,
    pub tokens: Vec<TokenConfig>,
    /// Serve `/metrics` without a token (for Prometheus scrapers).
    pub metrics_public: bool,
    /// Largest `page_size` a list returns.
    pub max_page_size: usize,
    /// Days in the training window `/api/features/{instrument}/window`
    /// describes (daily buckets, ending at the instrument's newest bar).
    pub feature_window_days: i64,
    /// Milliseconds a request waits for the broker to take its event before
    /// it answers 503 (librdkafka's `message.timeout.ms` of the API's
    /// producer).
    pub publish_timeout_ms: u64,
    /// Milliseconds in-flight requests get to finish after SIGTERM or
    /// Ctrl-C before the server stops anyway.
    pub shutdown_grace_ms: u64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            bind: "127.0.0.1:8080".into(),
            dev_mode: false,
            tokens: Vec::new(),
            metrics_public: true,
            max_page_size: 500,
            feature_window_days: 30,
            publish_timeout_ms: 10_000,
            shutdown_grace_ms: 5_000,
        }
    }
}

/// Why a configuration cannot serve.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("api.bind {0:?} is not an address (host:port)")]
    Bind(String),
    #[error(
        "api.dev_mode serves without authentication, so only on a loopback address; {0} is not one"
    )]
    DevModeNotLoopback(SocketAddr),
    #[error("api: no tokens configured and dev_mode is off: nobody could call the API (add [[api.tokens]] or set dev_mode on localhost)")]
    NoTokens,
    #[error("api.tokens {name:?}: sha256 must be 64 hex digits (the hash, never the token)")]
    BadHash { name: String },
    #[error("api.tokens {name:?}: no scopes")]
    NoScopes { name: String },
}

impl ApiConfig {
    /// The bind address, checked against the auth settings.
    pub fn check(&self) -> Result<SocketAddr, ConfigError> {
        let addr: SocketAddr = self
            .bind
            .parse()
            .map_err(|_| ConfigError::Bind(self.bind.clone()))?;
        if self.dev_mode {
            if !addr.ip().is_loopback() {
                return Err(ConfigError::DevModeNotLoopback(addr));
            }
            return Ok(addr);
        }
        if self.tokens.is_empty() {
            return Err(ConfigError::NoTokens);
        }
        for t in &self.tokens {
            if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ConfigError::BadHash {
                    name: t.name.clone(),
                });
            }
            if t.scopes.is_empty() {
                return Err(ConfigError::NoScopes {
                    name: t.name.clone(),
                });
            }
        }
        Ok(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_mode_is_loopback_only_and_tokens_are_hashes() {
        let mut c = ApiConfig {
            dev_mode: true,
            ..ApiConfig::default()
        };
        assert!(c.check().is_ok());
        c.bind = "0.0.0.0:8080".into();
        assert!(matches!(c.check(), Err(ConfigError::DevModeNotLoopback(_))));
        c.dev_mode = false;
        assert_eq!(c.check(), Err(ConfigError::NoTokens));
        c.tokens.push(TokenConfig {
            name: "ops".into(),
            sha256: "secret-token".into(),
            scopes: vec![Scope::Read],
            tenant: "*".into(),
        });
        assert!(matches!(c.check(), Err(ConfigError::BadHash { .. })));
        c.tokens[0].sha256 = "ab".repeat(32);
        assert!(c.check().is_ok());
    }

    #[test]
    fn tokens_parse_from_toml_with_scope_names() {
        let c: ApiConfig = toml::from_str(&format!(
            "bind = \"127.0.0.1:9\"\n[[tokens]]\nname = \"ci\"\nsha256 = \"{}\"\nscopes = [\"ml:read\", \"ml:train\"]\ntenant = \"desk-a\"\n",
            "0f".repeat(32)
        ))
        .expect("parses");
        assert_eq!(c.tokens[0].scopes, vec![Scope::Read, Scope::Train]);
        assert!(toml::from_str::<ApiConfig>("bind = \"x\"\nnope = 1\n").is_err());
    }
}
