//! [`ApiError`]: every failure a handler returns, as a JSON body
//! `{"error": {"status", "code", "message"}}` with the matching status;
//! and extractors that turn malformed requests into 400/422 instead of
//! axum's plain-text rejections.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request: bad JSON, bad query or path.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The target is in a state that does not allow the action.
    #[error("{0}")]
    Conflict(String),
    /// Well-formed but refused: out of bounds, unknown field, bad value.
    #[error("{0}")]
    Unprocessable(String),
    /// The broker did not take the event (retriable: try again).
    #[error("{0}")]
    Unavailable(String),
    /// The request's target (path and query) is longer than the API reads.
    #[error("{0}")]
    UriTooLong(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::UriTooLong(_) => StatusCode::URI_TOO_LONG,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Unprocessable(_) => "unprocessable",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::UriTooLong(_) => "uri_too_long",
        }
    }

    /// A retriable failure (the client may back off and repeat).
    pub fn is_retriable(&self) -> bool {
        matches!(self, ApiError::Unavailable(_))
    }
}

impl From<autotrain_kafka::KafkaError> for ApiError {
    fn from(e: autotrain_kafka::KafkaError) -> Self {
        ApiError::Unavailable(format!("publishing to the broker failed: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut r = axum::Json(serde_json::json!({
            "error": {"status": status.as_u16(), "code": self.code(), "message": self.to_string()}
        }))
        .into_response();
        *r.status_mut() = status;
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

/// A JSON body: syntax errors and a missing content type are 400, data
/// that does not fit the type (missing or unknown fields, wrong types) 422.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Body(v)),
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::Unprocessable(format!(
                "invalid body: {}",
                std::error::Error::source(&e).map_or(e.body_text(), |s| s.to_string())
            ))),
            Err(e) => Err(ApiError::BadRequest(format!(
                "invalid body: {}",
                e.body_text()
            ))),
        }
    }
}

/// An optional JSON body: empty means `T::default()`.
#[derive(Debug)]
pub struct OptionalBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("reading the body: {}", e.body_text())))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalBody(T::default()));
        }
        serde_json::from_slice(&bytes)
            .map(OptionalBody)
            .map_err(|e| match e.classify() {
                serde_json::error::Category::Data => {
                    ApiError::Unprocessable(format!("invalid body: {e}"))
                }
                _ => ApiError::BadRequest(format!("invalid body: {e}")),
            })
    }
}

/// Query parameters; a bad one is a 400 with the reason.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e: QueryRejection| ApiError::BadRequest(e.body_text()))
    }
}

/// Path parameters; a bad one is a 400 with the reason.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e: PathRejection| ApiError::BadRequest(e.body_text()))
    }
}

/// An integer as JSON Schema's `integer` means it: `1` and `1.0` alike (a
/// number with a fraction, or out of range, is refused). For
/// `#[serde(deserialize_with)]`.
pub fn json_i64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let n = <serde_json::Number as serde::Deserialize>::deserialize(d)?;
    n.as_i64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| {
                    // i64::MIN is -2^63 exactly; i64::MAX as f64 rounds up
                    // to 2^63, the first value out of range.
                    f.fract() == 0.0 && (i64::MIN as f64..i64::MAX as f64).contains(f)
                })
                .map(|f| f as i64)
        })
        .ok_or_else(|| {
            serde::de::Error::custom(format!("{n} is not an integer between -2^63 and 2^63-1"))
        })
}

/// The largest integer every JSON reader holds exactly (2^53 - 1).
pub const MAX_SAFE_INTEGER: i64 = 9_007_199_254_740_991;

/// [`json_i64`] within 0 ..= [`MAX_SAFE_INTEGER`] (a seed: no value near
/// the ends of `i64`, where a JSON float cannot say which integer it is).
pub fn json_seed<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let v = json_i64(d)?;
    if (0..=MAX_SAFE_INTEGER).contains(&v) {
        Ok(v)
    } else {
        Err(serde::de::Error::custom(format!(
            "{v} is not between 0 and {MAX_SAFE_INTEGER}"
        )))
    }
}

/// An optional [`json_seed`] (an epoch time in ms, say).
pub fn json_opt_safe<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    json_seed(d).map(Some)
}

/// [`json_i64`] within `i32`.
pub fn json_i32<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    let v = json_i64(d)?;
    i32::try_from(v)
        .map_err(|_| serde::de::Error::custom(format!("{v} is out of range for an int32")))
}

#[cfg(test)]
mod tests {
    #[derive(Debug, serde::Deserialize)]
    struct B {
        #[serde(deserialize_with = "super::json_i64")]
        n: i64,
        #[serde(deserialize_with = "super::json_i32", default)]
        v: i32,
    }

    #[test]
    fn integers_are_what_json_schema_calls_integers() {
        let n = |text: &str| serde_json::from_str::<B>(text).map(|b| (b.n, b.v));
        assert_eq!(n(r#"{"n": 3}"#).ok(), Some((3, 0)));
        assert_eq!(n(r#"{"n": 3.0, "v": 2.0}"#).ok(), Some((3, 2)));
        assert_eq!(
            n(r#"{"n": -9223372036854775808.0}"#).ok(),
            Some((i64::MIN, 0))
        );
        assert!(n(r#"{"n": 9223372036854775808.0}"#).is_err());
        assert!(n(r#"{"n": 9223372036854775808}"#).is_err());
        assert!(n(r#"{"n": 1.5}"#).is_err());
        assert!(n(r#"{"n": "3"}"#).is_err());
        assert!(n(r#"{"n": 1, "v": 2147483648}"#).is_err());
    }
}
