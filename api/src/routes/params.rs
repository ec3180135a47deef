//! The parameter endpoints: register a preset (`param.presets`), ask what
//! the policy chooses for a context (a read of the controller replica in
//! the views), and post a realised reward (`trade.outcomes`, the same
//! events the engine posts). Strategies are platform-wide: changing them
//! needs a platform token.

use std::collections::BTreeMap;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use autotrain_params::{update_key, ResumeError};
use autotrain_schemas::{PresetRegistration, PresetValue, TradeOutcome};
use autotrain_topics::{PARAM_PRESETS, PARAM_UPDATES, TRADE_OUTCOMES};

use crate::auth::Principal;
use crate::config::Scope;
use crate::error::{ApiError, Body, Path};
use crate::state::{Advised, ApiState};

/// `POST /preset/register/{strategy}/{instrument}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPreset {
    pub preset_id: String,
    pub params: BTreeMap<String, f64>,
}

pub async fn register(
    State(s): State<ApiState>,
    p: Principal,
    Path((strategy, instrument)): Path<(String, String)>,
    body: Result<Body<NewPreset>, ApiError>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    p.require(Scope::Write)?;
    p.require_platform("a strategy's presets")?;
    let Body(b) = body?;
    let r = PresetRegistration {
        strategy: strategy.clone(),
        instrument: instrument.clone(),
        preset_id: b.preset_id.clone(),
        params: b
            .params
            .iter()
            .map(|(name, value)| PresetValue {
                name: name.clone(),
                value: *value,
            })
            .collect(),
        tenant: p.tenant_for_new(),
        actor: p.actor(),
        at: chrono::Utc::now().timestamp_millis(),
    };
    {
        let v = s.views();
        if v.params.context_len(&strategy).is_none() {
            return Err(ApiError::NotFound(format!("no strategy {strategy:?}")));
        }
        let preset = autotrain_params::processor::preset_of(&r);
        v.params
            .check_registration(&strategy, &instrument, &preset)
            .map_err(|e| {
                if e.contains("exists") {
                    ApiError::Conflict(e)
                } else {
                    ApiError::BadRequest(e)
                }
            })?;
    }
    let key = format!("{strategy}/{instrument}/{}", b.preset_id);
    s.publish(PARAM_PRESETS, &key, &r).await?;
    // The follower will see it too; registering twice is refused quietly.
    let _ = autotrain_params::processor::register(&mut s.views_mut().params, &r);
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "strategy": strategy,
            "instrument": instrument,
            "preset_id": b.preset_id,
            "params": b.params,
        })),
    ))
}

/// `POST /param/{strategy}/{instrument}/resume`: ops reset a tripped
/// kill-switch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resume {
    /// Why (recorded on the update with the token's name).
    pub reason: String,
}

pub async fn resume(
    State(s): State<ApiState>,
    p: Principal,
    Path((strategy, instrument)): Path<(String, String)>,
    body: Result<Body<Resume>, ApiError>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    p.require(Scope::Write)?;
    p.require_platform("a strategy's kill-switch")?;
    let Body(b) = body?;
    if b.reason.is_empty() {
        return Err(ApiError::Unprocessable("reason is empty".into()));
    }
    let u = s
        .views()
        .params
        .resume(&strategy, &instrument, &p.actor(), &b.reason)
        .map_err(|e| match e {
            ResumeError::NoStrategy(_) => ApiError::NotFound(e.to_string()),
            ResumeError::NotHeld { .. } => ApiError::Conflict(e.to_string()),
        })?;
    s.publish(PARAM_UPDATES, &update_key(&strategy, &instrument), &u)
        .await?;
    tracing::info!(
        %strategy, %instrument, actor = %p.actor(), reason = %b.reason, at = u.at,
        "kill-switch reset"
    );
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "strategy": strategy,
            "instrument": instrument,
            "config_id": u.config_id,
            "preset_id": u.preset_id,
            "from_bar": u.at,
            "actor": u.actor,
        })),
    ))
}

/// Feature values from `features[name]=value` (or `features.name=value`).
fn features(raw: Option<&str>) -> Result<BTreeMap<String, f64>, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| ApiError::BadRequest(format!("query: {e}")))?;
    let mut out = BTreeMap::new();
    for (k, v) in pairs {
        let name = k
            .strip_prefix("features[")
            .and_then(|n| n.strip_suffix(']'))
            .or_else(|| k.strip_prefix("features."))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "query parameter {k:?}: expected features[name]=value"
                ))
            })?;
        let x: f64 = v
            .parse()
            .ok()
            .filter(|x: &f64| x.is_finite())
            .ok_or_else(|| {
                ApiError::BadRequest(format!("features[{name}] = {v:?} is not a number"))
            })?;
        out.insert(name.to_string(), x);
    }
    Ok(out)
}

pub async fn advise(
    State(s): State<ApiState>,
    p: Principal,
    Path((strategy, instrument)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    p.require(Scope::Read)?;
    let given = features(raw.as_deref())?;
    let advice = {
        let v = s.views();
        if v.params.context_len(&strategy).is_none() {
            return Err(ApiError::NotFound(format!("no strategy {strategy:?}")));
        }
        v.params
            .advise(&strategy, &instrument, &given)
            .map_err(ApiError::BadRequest)?
    };
    s.remember_advice(
        &advice.config_id,
        Advised {
            strategy: strategy.clone(),
            instrument: instrument.clone(),
            preset_id: advice.preset_id.clone(),
            context: advice.context.clone(),
        },
    );
    serde_json::to_value(&advice)
        .map(Json)
        .map_err(|e| ApiError::Unprocessable(e.to_string()))
}

/// `POST /learn/outcome/{strategy}/{instrument}/{preset_id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    pub reward: f64,
    /// What the strategy's safe preset would have earned on the same
    /// trade, if the engine scores it (the conservative controller's
    /// budget counts it).
    #[serde(default)]
    pub baseline_reward: Option<f64>,
    /// The decision the trade was opened under (from `GET /param` or a
    /// `param.updates` record); its context is what the policy learns on.
    #[serde(default)]
    pub config_id: Option<String>,
    /// The decision's context, if the caller has it.
    #[serde(default)]
    pub context: Option<Vec<f64>>,
    #[serde(default)]
    pub trade_id: Option<String>,
    /// When the trade closed (epoch ms; default now).
    #[serde(default, deserialize_with = "crate::error::json_opt_safe")]
    pub ts: Option<i64>,
}

pub async fn outcome(
    State(s): State<ApiState>,
    p: Principal,
    Path((strategy, instrument, preset_id)): Path<(String, String, String)>,
    body: Result<Body<Outcome>, ApiError>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    p.require(Scope::Train)?;
    p.require_platform("a strategy's outcomes")?;
    let Body(b) = body?;
    if !b.reward.is_finite() {
        return Err(ApiError::Unprocessable("reward is not a number".into()));
    }
    if b.baseline_reward.is_some_and(|r| !r.is_finite()) {
        return Err(ApiError::Unprocessable(
            "baseline_reward is not a number".into(),
        ));
    }
    let context = {
        let v = s.views();
        let d = v
            .params
            .context_len(&strategy)
            .ok_or_else(|| ApiError::NotFound(format!("no strategy {strategy:?}")))?;
        let known = v
            .params
            .presets(&strategy, &instrument)
            .is_some_and(|ps| ps.iter().any(|x| x.id == preset_id));
        if !known {
            return Err(ApiError::NotFound(format!(
                "{strategy} on {instrument} has no preset {preset_id:?}"
            )));
        }
        let from_decision = b.config_id.as_deref().and_then(|id| {
            s.advised(id)
                .filter(|a| a.strategy == strategy && a.instrument == instrument)
                .map(|a| a.context)
                .or_else(|| {
                    v.params
                        .decision(id)
                        .filter(|(st, i, _)| *st == strategy && *i == instrument)
                        .map(|(_, _, x)| x.to_vec())
                })
        });
        match (b.context.clone(), from_decision) {
            (Some(x), _) if x.len() != d => {
                return Err(ApiError::Unprocessable(format!(
                    "context has {} value(s); {strategy}'s decisions have {d}",
                    x.len()
                )))
            }
            (Some(x), _) if x.iter().any(|v| !v.is_finite()) => {
                return Err(ApiError::Unprocessable("context holds a non-number".into()))
            }
            (Some(x), _) | (None, Some(x)) => x,
            (None, None) => {
                return Err(ApiError::Unprocessable(match &b.config_id {
                    Some(id) => format!(
                        "config_id {id:?} is not a recent decision for {strategy} on {instrument}; send its context"
                    ),
                    None => "send the decision's config_id (from GET /param or param.updates) or its context".into(),
                }))
            }
        }
    };
    let o = TradeOutcome {
        trade_id: b.trade_id.unwrap_or_else(|| s.next_id("api-trade")),
        strategy: strategy.clone(),
        instrument: instrument.clone(),
        config_id: b.config_id.unwrap_or_default(),
        preset_id,
        reward: b.reward,
        context,
        ts: b
            .ts
            .unwrap_or_else(|| chrono::Utc::now().timestamp_millis()),
        baseline_reward: b.baseline_reward,
        flat: false,
    };
    s.publish(TRADE_OUTCOMES, &update_key(&strategy, &instrument), &o)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "trade_id": o.trade_id,
            "config_id": o.config_id,
            "preset_id": o.preset_id,
            "reward": o.reward,
        })),
    ))
}
