//! What the dashboard reads beyond the other resources: the instruments
//! with chart series (`/api/instruments`, `/api/instruments/{instrument}/chart`:
//! closes, regimes and flag markers), the parameter controller at a glance
//! (`/api/params`: what is in force, kill-switches, reward per preset with
//! the safe one marked, recent changes) and the caller (`/api/whoami`, so
//! the page shows only the buttons its token may use).

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use autotrain_validator::StateFilter;

use crate::auth::Principal;
use crate::config::Scope;
use crate::error::{ApiError, Path, Query};
use crate::state::ApiState;

pub async fn whoami(p: Principal) -> Result<Json<Value>, ApiError> {
    p.require(Scope::Read)?;
    let scopes: Vec<&str> = p.scopes.iter().map(|s| s.as_str()).collect();
    Ok(Json(
        json!({"name": p.name, "scopes": scopes, "tenant": p.tenant}),
    ))
}

pub async fn instruments(State(s): State<ApiState>, p: Principal) -> Result<Json<Value>, ApiError> {
    p.require(Scope::Read)?;
    let v = s.views();
    let items: Vec<Value> = v
        .charts
        .instruments()
        .map(|(name, series)| {
            json!({
                "instrument": name,
                "timeframe": series.timeframe,
                "closes": series.closes.len(),
                "regimes": series.regimes.len(),
                "first_ts": series.closes.front().map(|c| c.ts),
                "last_ts": series.closes.back().map(|c| c.ts),
            })
        })
        .collect();
    Ok(Json(json!({"items": items, "total": items.len()})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChartArgs {
    limit: Option<String>,
}

/// Points a chart answer holds at most (the newest).
pub const MAX_POINTS: usize = crate::charts::KEEP;

pub async fn chart(
    State(s): State<ApiState>,
    p: Principal,
    Path(instrument): Path<String>,
    Query(q): Query<ChartArgs>,
) -> Result<Json<Value>, ApiError> {
    p.require(Scope::Read)?;
    let limit = match &q.limit {
        None => 2_000,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_POINTS).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest(format!("limit {l:?} is not a number in 1..={MAX_POINTS}"))
            })?,
    };
    let v = s.views();
    let series = v
        .charts
        .get(&instrument)
        .ok_or_else(|| ApiError::NotFound(format!("no bars or regimes for {instrument:?}")))?;
    let closes: Vec<_> = series.closes.iter().rev().take(limit).rev().collect();
    let from = closes.first().map_or(i64::MIN, |c| c.ts);
    let regimes: Vec<_> = series.regimes.iter().filter(|r| r.ts >= from).collect();
    let number = |x: f64| if x.is_finite() { json!(x) } else { Value::Null };
    let flags: Vec<Value> = v
        .flags
        .list(StateFilter::All)
        .into_iter()
        .map(|i| &i.current)
        .filter(|f| f.instrument == instrument && f.ts >= from)
        .map(|f| {
            json!({"flag_id": f.flag_id, "ts": f.ts, "kind": f.kind, "severity": f.severity, "state": f.state})
        })
        .collect();
    Ok(Json(json!({
        "instrument": instrument,
        "timeframe": series.timeframe,
        "closes": closes.iter().map(|c| json!([c.ts, number(c.close)])).collect::<Vec<_>>(),
        "regimes": regimes.iter().map(|r| json!([r.ts, r.regime, number(r.p), r.model_version])).collect::<Vec<_>>(),
        "flags": flags,
    })))
}

pub async fn params(State(s): State<ApiState>, p: Principal) -> Result<Json<Value>, ApiError> {
    p.require(Scope::Read)?;
    let v = s.views();
    let controller = &v.params;
    let preset_id = |strategy: &str, instrument: &str, arm: usize| {
        controller
            .presets(strategy, instrument)
            .and_then(|ps| ps.get(arm).map(|p| p.id.clone()))
    };
    let slots: Vec<Value> = controller
        .slots()
        .map(|((strategy, instrument), slot)| {
            json!({
                "strategy": strategy,
                "instrument": instrument,
                "preset_id": slot.current.as_ref().and_then(|(arm, _)| preset_id(strategy, instrument, *arm)),
                "config_id": slot.current.as_ref().map(|(_, c)| c),
                "realised": slot.realised,
                "killed": slot.killed,
            })
        })
        .collect();
    let safe: std::collections::BTreeMap<&str, &str> = controller
        .schemas()
        .iter()
        .map(|s| (s.name.as_str(), s.presets[s.safe_preset()].id.as_str()))
        .collect();
    let presets: Vec<Value> = v
        .param_log
        .by_preset
        .iter()
        .map(|((strategy, preset), (trades, reward))| {
            json!({
                "strategy": strategy,
                "preset_id": preset,
                "safe": safe.get(strategy.as_str()) == Some(&preset.as_str()),
                "trades": trades,
                "reward": reward,
            })
        })
        .collect();
    let changes: Vec<Value> = v
        .param_log
        .recent
        .iter()
        .rev()
        .map(|u| {
            json!({
                "strategy": u.strategy, "instrument": u.instrument, "preset_id": u.preset_id,
                "reason": u.reason, "effective_for": u.effective_for, "at": u.at,
                "model_version": u.model_version, "actor": u.actor, "note": u.note,
            })
        })
        .collect();
    Ok(Json(
        json!({"slots": slots, "presets": presets, "changes": changes}),
    ))
}
