//! `/api/models…`: the registry folded from `model.updates`; promote and
//! roll back are `TrainingCommand`s the trainer carries out (rollback after
//! re-scoring the target on the reference set). Model keys hold `/`
//! (`hmm/bitfinex:BTCUSD`), so the key is the rest of the path, raw or
//! percent-encoded.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use autotrain_schemas::{CommandAction, TrainingCommand};
use autotrain_topics::TRAINING_COMMANDS;
use autotrain_trainer::{Model, PROD, STAGING};

use crate::auth::Principal;
use crate::config::Scope;
use crate::error::{ApiError, Body, Path, Query};
use crate::state::ApiState;
use crate::views::Views;

pub async fn list(State(s): State<ApiState>, p: Principal) -> Result<Json<Value>, ApiError> {
    p.require(Scope::Read)?;
    let v = s.views();
    let items: Vec<Value> = v
        .registry
        .keys()
        .filter(|k| p.sees(v.model_tenant(k)))
        .filter_map(|k| {
            let m = v.registry.model(k)?;
            Some(json!({
                "model_key": k,
                "tenant": v.model_tenant(k),
                "versions": m.versions.len(),
                "aliases": m.aliases,
            }))
        })
        .collect();
    Ok(Json(json!({ "items": items, "total": items.len() })))
}

/// The model of `key`, if it exists and the caller's tenant may see it.
fn visible<'a>(v: &'a Views, p: &Principal, key: &str) -> Result<&'a Model, ApiError> {
    let m = v
        .registry
        .model(key)
        .ok_or_else(|| ApiError::NotFound(format!("no model {key:?}")))?;
    p.require_tenant(v.model_tenant(key), &format!("model {key}"))?;
    Ok(m)
}

pub async fn show(
    State(s): State<ApiState>,
    p: Principal,
    Path(key): Path<String>,
    Query(q): Query<std::collections::BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    p.require(Scope::Read)?;
    if let Some(key) = key.strip_suffix("/predict") {
        return predict(&s, &p, key, &q);
    }
    let v = s.views();
    let m = visible(&v, &p, &key)?;
    Ok(Json(json!({
        "model_key": key,
        "tenant": v.model_tenant(&key),
        "aliases": m.aliases,
        "prod": m.aliases.get(PROD),
        "staging": m.aliases.get(STAGING),
        "versions": m.versions.values().collect::<Vec<_>>(),
        "events": m.events.len(),
    })))
}

/// `GET /api/models/{model_key}/predict?{column}={value}…[&version=N]`:
/// a forecast model's prediction for one feature vector, under `prod`
/// (or the version named). Every column the model reads must be given
/// (a number, or empty for missing); an HMM key has no point forecast.
fn predict(
    s: &ApiState,
    p: &Principal,
    key: &str,
    q: &std::collections::BTreeMap<String, String>,
) -> Result<Json<Value>, ApiError> {
    use autotrain_trainer::forecast::ForecastModel;
    use autotrain_trainer::spec::Family;
    let v = s.views();
    let m = visible(&v, p, key)?;
    let version = match q.get("version") {
        Some(n) => n
            .parse::<i32>()
            .map_err(|_| ApiError::BadRequest(format!("version {n:?} is not a number")))?,
        None => *m
            .aliases
            .get(PROD)
            .ok_or_else(|| ApiError::Unprocessable(format!("{key} has no prod version")))?,
    };
    let mv = m
        .versions
        .get(&version)
        .ok_or_else(|| ApiError::NotFound(format!("{key} has no version {version}")))?;
    if Family::of(mv) != Family::Gbdt {
        return Err(ApiError::Unprocessable(format!(
            "{key} v{version} is an HMM: it has no point forecast (its regimes are on the regimes topic)"
        )));
    }
    let model = mv
        .parameters
        .as_deref()
        .and_then(|b| ForecastModel::from_json(b).ok())
        .ok_or_else(|| {
            ApiError::Unprocessable(format!("{key} v{version}: parameters do not load"))
        })?;
    let unknown: Vec<&String> = q
        .keys()
        .filter(|k| *k != "version" && !model.columns.contains(k))
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "unknown feature(s) {unknown:?}; the model reads {:?}",
            model.columns
        )));
    }
    let mut row = Vec::with_capacity(model.columns.len());
    for c in &model.columns {
        let raw = q.get(c).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "feature {c:?} missing; the model reads {:?} (empty for a missing value)",
                model.columns
            ))
        })?;
        row.push(if raw.trim().is_empty() {
            f64::NAN
        } else {
            raw.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| {
                    ApiError::BadRequest(format!("feature {c:?}: {raw:?} is not a number"))
                })?
        });
    }
    Ok(Json(json!({
        "model_key": key,
        "version": version,
        "target": model.target.name(),
        "columns": model.columns,
        "prediction": model.predict_row(&row),
        "parameter_hash": mv.parameter_hash,
    })))
}

/// `POST /api/models/{model_key}/promote|rollback`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliasMove {
    #[serde(deserialize_with = "crate::error::json_i32")]
    pub model_version: i32,
    #[serde(default)]
    pub reason: String,
    /// Rollback only: go through although the re-score on prod's reference
    /// set is worse than the tolerance (the trainer wants a reason).
    #[serde(default)]
    pub force: bool,
    /// Rollback only: re-score here and answer the verdict (200), sending
    /// nothing (the reference store must be readable from the API's host).
    #[serde(default)]
    pub plan: bool,
}

/// `POST /api/models/{*rest}`: `rest` is `{model_key}/promote` or
/// `{model_key}/rollback`.
/// Any other method on `/api/models/…`: 405 with the methods the path
/// takes (`POST` for `…/promote` and `…/rollback`, `GET` otherwise).
pub async fn method_not_allowed(uri: axum::http::Uri) -> impl axum::response::IntoResponse {
    let path = uri.path();
    let allow = if path.ends_with("/promote") || path.ends_with("/rollback") {
        "POST"
    } else {
        "GET"
    };
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(axum::http::header::ALLOW, allow)],
        Json(
            json!({"error": {"status": 405, "code": "method_not_allowed", "message": format!("{path} takes {allow}")}}),
        ),
    )
}

pub async fn act(
    State(s): State<ApiState>,
    p: Principal,
    Path(rest): Path<String>,
    body: Result<Body<AliasMove>, ApiError>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (key, action) = match rest.rsplit_once('/') {
        Some((key, "promote")) => (key.to_string(), CommandAction::Promote),
        Some((key, "rollback")) => (key.to_string(), CommandAction::Rollback),
        _ => {
            return Err(ApiError::NotFound(format!(
                "POST /api/models/{rest}: expected …/{{model_key}}/promote or …/rollback"
            )))
        }
    };
    p.require(Scope::Write)?;
    let Body(b) = body?;
    if b.force && action == CommandAction::Promote {
        return Err(ApiError::Unprocessable(
            "force is for a rollback (a promotion by ops already overrides the guardrails)".into(),
        ));
    }
    if b.plan && action == CommandAction::Promote {
        return Err(ApiError::Unprocessable("plan is for a rollback".into()));
    }
    {
        let v = s.views();
        let m = visible(&v, &p, &key)?;
        if !m.versions.contains_key(&b.model_version) {
            return Err(ApiError::NotFound(format!(
                "{key} has no version {} (it has {:?})",
                b.model_version,
                m.versions.keys().collect::<Vec<_>>()
            )));
        }
        let prod = m.aliases.get(PROD).copied();
        if prod == Some(b.model_version) {
            return Err(ApiError::Conflict(format!(
                "{key} v{} is prod already",
                b.model_version
            )));
        }
        if action == CommandAction::Rollback && prod.is_none_or(|p| b.model_version > p) {
            return Err(ApiError::Unprocessable(format!(
                "rollback goes to a version older than prod (v{}); use promote for v{}",
                prod.map_or("-".into(), |v| v.to_string()),
                b.model_version
            )));
        }
    }
    if b.plan {
        return rollback_plan(&s, &key, b.model_version).await;
    }
    let c = TrainingCommand {
        command_id: s.next_id("cmd"),
        action,
        training_id: None,
        model_key: Some(key.clone()),
        version: Some(b.model_version),
        tenant: p.tenant_for_new(),
        actor: p.actor(),
        reason: b.reason,
        at: chrono::Utc::now().timestamp_millis(),
        force: b.force,
    };
    s.publish(TRAINING_COMMANDS, &key, &c).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "command_id": c.command_id,
            "model_key": key,
            "action": format!("{action:?}").to_lowercase(),
            "model_version": b.model_version,
            "href": format!("/api/models/{key}"),
        })),
    ))
}

/// The trainer's rollback check, run here: the target re-scored on prod's
/// reference set against prod's own score there (nothing is sent).
async fn rollback_plan(
    s: &ApiState,
    key: &str,
    version: i32,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (prod, target) = {
        let v = s.views();
        let m = v
            .registry
            .model(key)
            .ok_or_else(|| ApiError::NotFound(format!("no model {key}")))?;
        let prod = m
            .alias(PROD)
            .cloned()
            .ok_or_else(|| ApiError::Conflict(format!("{key} has no prod version")))?;
        let target = m
            .versions
            .get(&version)
            .cloned()
            .ok_or_else(|| ApiError::NotFound(format!("{key} has no version {version}")))?;
        (prod, target)
    };
    let store = autotrain_trainer::service::ReferenceStore::new(&s.trainer.store_dir);
    let cost = s.trainer.defaults.cost_bps;
    let g = s.trainer.guardrails.clone();
    let (p, t) = (prod.clone(), target.clone());
    let rescored = tokio::task::spawn_blocking(move || {
        autotrain_trainer::service::intake::rescore(&store, Some(&p), &t, cost)
    })
    .await
    .map_err(|e| ApiError::Unprocessable(format!("re-score: {e}")))?
    .map_err(|e| {
        ApiError::Conflict(format!(
            "cannot re-score v{version} here ({e}); the trainer still checks it when the rollback is sent"
        ))
    })?;
    let score = |ms: &[autotrain_schemas::Metric], name: &str| {
        ms.iter().find(|m| m.name == name).map(|m| m.value)
    };
    let verdict = g.rollback_check(&prod.metrics, &rescored);
    Ok((
        StatusCode::OK,
        Json(json!({
            "model_key": key,
            "prod": prod.version,
            "model_version": version,
            "metric": g.metric,
            "rescored": score(&rescored, &format!("rescored_{}", g.metric)),
            "prod_score": score(&prod.metrics, &g.metric),
            "rollback_tolerance": g.rollback_tolerance,
            "verified": verdict.is_ok(),
            "refusal": verdict.err(),
        })),
    ))
}
