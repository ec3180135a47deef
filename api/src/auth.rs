//! Bearer tokens: the caller's identity, scopes and tenant. Tokens are
//! configured by their SHA-256; the presented token is hashed and looked
//! up, so the config never holds a secret.

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::config::{ApiConfig, Scope};
use crate::error::ApiError;

/// Tenant of a platform token (sees and acts on every tenant).
pub const ALL_TENANTS: &str = "*";
/// Tenant of what carries none (drift and schedule triggers).
pub const DEFAULT_TENANT: &str = "default";

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub scopes: Vec<Scope>,
    pub tenant: String,
}

/// Hex SHA-256 of a token: what `[[api.tokens]]` holds.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Principal {
    /// The actor recorded on events this caller causes.
    pub fn actor(&self) -> String {
        format!("api:{}", self.name)
    }

    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "token {:?} lacks scope {}",
                self.name,
                scope.as_str()
            )))
        }
    }

    pub fn sees(&self, tenant: Option<&str>) -> bool {
        self.tenant == ALL_TENANTS || self.tenant == tenant.unwrap_or(DEFAULT_TENANT)
    }

    /// Acting on something of `tenant` (None = the default tenant).
    pub fn require_tenant(&self, tenant: Option<&str>, what: &str) -> Result<(), ApiError> {
        if self.sees(tenant) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "{what} belongs to tenant {:?}; token {:?} acts for {:?}",
                tenant.unwrap_or(DEFAULT_TENANT),
                self.name,
                self.tenant
            )))
        }
    }

    /// Platform-wide resources (market data flags, strategies' presets and
    /// outcomes) belong to no tenant: changing them needs a platform token.
    pub fn require_platform(&self, what: &str) -> Result<(), ApiError> {
        if self.tenant == ALL_TENANTS {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "{what} is platform-wide: it needs a token of tenant \"*\" (token {:?} acts for {:?})",
                self.name, self.tenant
            )))
        }
    }

    /// The tenant stamped on what this caller creates.
    pub fn tenant_for_new(&self) -> Option<String> {
        (self.tenant != ALL_TENANTS).then(|| self.tenant.clone())
    }
}

/// The caller of a request, from its `Authorization: Bearer …` header.
pub fn authenticate(config: &ApiConfig, headers: &HeaderMap) -> Result<Principal, ApiError> {
    if config.dev_mode {
        return Ok(Principal {
            name: "dev".into(),
            scopes: vec![Scope::Read, Scope::Train, Scope::Write],
            tenant: ALL_TENANTS.into(),
        });
    }
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized("missing Authorization: Bearer <token>".into()))?;
    // The scheme is case-insensitive (RFC 9110 §11.1).
    let token = header
        .to_str()
        .ok()
        .and_then(|h| h.trim_start().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::Unauthorized("Authorization must be `Bearer <token>`".into()))?;
    let hash = hash_token(token);
    config
        .tokens
        .iter()
        .find(|t| t.sha256.eq_ignore_ascii_case(&hash))
        .map(|t| Principal {
            name: t.name.clone(),
            scopes: t.scopes.clone(),
            tenant: t.tenant.clone(),
        })
        .ok_or_else(|| ApiError::Unauthorized("unknown token".into()))
}

impl axum::extract::FromRequestParts<crate::state::ApiState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &crate::state::ApiState,
    ) -> Result<Self, Self::Rejection> {
        authenticate(&state.config, &parts.headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenConfig;

    fn config() -> ApiConfig {
        ApiConfig {
            tokens: vec![TokenConfig {
                name: "desk".into(),
                sha256: hash_token("s3cret"),
                scopes: vec![Scope::Read],
                tenant: "desk-a".into(),
            }],
            ..ApiConfig::default()
        }
    }

    fn bearer(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::AUTHORIZATION,
            v.parse().expect("header"),
        );
        h
    }

    #[test]
    fn tokens_are_matched_by_hash_and_carry_scopes_and_tenant() {
        let c = config();
        let p = authenticate(&c, &bearer("Bearer s3cret")).expect("known");
        assert_eq!((p.name.as_str(), p.tenant.as_str()), ("desk", "desk-a"));
        assert!(p.require(Scope::Read).is_ok());
        assert!(matches!(
            p.require(Scope::Write),
            Err(ApiError::Forbidden(_))
        ));
        assert!(p.sees(Some("desk-a")) && !p.sees(Some("desk-b")) && !p.sees(None));
        assert!(p.require_platform("flags").is_err());
        for bad in ["Bearer nope", "Basic s3cret", "Bearer "] {
            assert!(matches!(
                authenticate(&c, &bearer(bad)),
                Err(ApiError::Unauthorized(_))
            ));
        }
        assert!(matches!(
            authenticate(&c, &HeaderMap::new()),
            Err(ApiError::Unauthorized(_))
        ));
    }
}
