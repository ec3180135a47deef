//! `/api/flags…`: the human-in-the-loop queue folded from `market.flags`;
//! decisions are published back to `market.flags`, where the validator
//! releases or discards held bars and the trainer lifts gap blocks.
//! Market data is platform-wide: deciding needs a platform token.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use autotrain_topics::MARKET_FLAGS;
use autotrain_validator::{Action, ReviewError, StateFilter};

use crate::auth::Principal;
use crate::config::Scope;
use crate::error::{ApiError, OptionalBody, Path, Query};
use crate::state::ApiState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    state: Option<String>,
    instrument: Option<String>,
}

pub async fn list(
    State(s): State<ApiState>,
    p: Principal,
    Query(q): Query<ListArgs>,
) -> Result<Json<Value>, ApiError> {
    p.require(Scope::Read)?;
    let filter = match &q.state {
        None => StateFilter::Pending,
        Some(st) => StateFilter::parse(st).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "state {st:?} is not one of pending, open, decided, all"
            ))
        })?,
    };
    let v = s.views();
    let items: Vec<Value> = v
        .flags
        .list(filter)
        .into_iter()
        .filter(|i| {
            q.instrument
                .as_ref()
                .is_none_or(|x| &i.current.instrument == x)
        })
        .filter_map(|i| serde_json::to_value(&i.current).ok())
        .collect();
    Ok(Json(json!({ "items": items, "total": items.len() })))
}

pub async fn show(
    State(s): State<ApiState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    p.require(Scope::Read)?;
    let v = s.views();
    let item = v
        .flags
        .get(&id)
        .ok_or_else(|| ApiError::NotFound(format!("no flag {id:?}")))?;
    serde_json::to_value(item)
        .map(Json)
        .map_err(|e| ApiError::Unprocessable(e.to_string()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    reason: Option<String>,
}

pub async fn decide(
    State(s): State<ApiState>,
    p: Principal,
    Path((id, verb)): Path<(String, String)>,
    body: Result<OptionalBody<Decision>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    let action = match verb.as_str() {
        "approve" => Action::Approve,
        "reject" => Action::Reject,
        "override" => Action::Override,
        other => {
            return Err(ApiError::NotFound(format!(
                "no flag action {other:?} (approve, reject, override)"
            )))
        }
    };
    p.require(Scope::Write)?;
    p.require_platform("market data")?;
    let OptionalBody(d) = body?;
    let event = s
        .views()
        .flags
        .decide(
            &id,
            action,
            &p.actor(),
            d.reason.as_deref(),
            chrono::Utc::now().timestamp_millis(),
        )
        .map_err(|e| match e {
            ReviewError::Unknown(_) => ApiError::NotFound(e.to_string()),
            ReviewError::NotDecidable { .. } => ApiError::Conflict(e.to_string()),
        })?;
    s.publish(MARKET_FLAGS, &event.instrument, &event).await?;
    s.views_mut().flags.apply(&event);
    serde_json::to_value(&event)
        .map(Json)
        .map_err(|e| ApiError::Unprocessable(e.to_string()))
}
