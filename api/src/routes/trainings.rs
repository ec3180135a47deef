//! `/api/trainings…`: submit (a `TrainingTrigger`), list, show, cancel /
//! retry (a `TrainingCommand`), rerun from a manifest, logs, stats. Reads
//! come from the trainings view folded from `training.status` and
//! `training.triggers`; a training is `submitted` until the trainer's
//! first status.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use autotrain_schemas::{
    CommandAction, Param, Priority, TrainingCommand, TrainingState, TrainingTrigger, TriggerReason,
};
use autotrain_topics::{TRAINING_COMMANDS, TRAINING_TRIGGERS};
use autotrain_trainer::queue::{rerun_trigger, training_id};
use autotrain_trainer::spec::{Kind, TrainSpec, HYPERPARAMS, NAME_PATTERN};
use autotrain_trainer::view::TrainingView;

use crate::auth::Principal;
use crate::config::Scope;
use crate::error::{ApiError, Body, OptionalBody, Path, Query};
use crate::state::ApiState;
use crate::views::Views;

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Train now on what `features` holds.
    #[default]
    Adhoc,
    /// A backfill run (lower urgency by convention; recorded as such).
    Backfill,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PriorityArg {
    Low,
    #[default]
    Normal,
    High,
    Urgent,
}

fn default_seed() -> i64 {
    42
}

/// `POST /api/trainings`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTraining {
    pub model_key: String,
    #[serde(default)]
    pub instruments: Vec<String>,
    #[serde(default)]
    pub dataset_version: Option<String>,
    #[serde(default)]
    pub feature_contract_version: Option<String>,
    /// Hyper-parameters by name (numbers, strings or booleans).
    #[serde(default)]
    pub hyperparams: BTreeMap<String, Value>,
    #[serde(default)]
    pub schedule: Schedule,
    #[serde(default)]
    pub auto_promote: bool,
    /// Fetching bars is a connector's job (`autotrain fetch`); only
    /// `false` is accepted.
    #[serde(default)]
    pub run_fetch: bool,
    #[serde(default)]
    pub priority: PriorityArg,
    #[serde(default = "default_seed", deserialize_with = "crate::error::json_seed")]
    pub seed: i64,
}

fn state_name(s: TrainingState) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

const STATES: &[&str] = &[
    "submitted",
    "queued",
    "waiting_data",
    "blocked",
    "running",
    "completed",
    "failed",
    "cancelled",
];

/// A training as the API shows it: the trainer's view, or the trigger
/// while it is `submitted`.
fn describe(v: &Views, id: &str, with_events: bool) -> Option<Value> {
    let tenant = v.training_tenant(id).map(str::to_string);
    if let Some(t) = v.trainings.get(id) {
        let mut out = serde_json::to_value(t).ok()?;
        if let Some(o) = out.as_object_mut() {
            if !with_events {
                o.remove("events");
            }
            o.insert("tenant".into(), json!(tenant));
            if let Some(trigger) = v.triggers.get(id) {
                o.insert("reason".into(), json!(trigger.reason));
                o.insert("priority".into(), json!(trigger.priority));
            }
        }
        return Some(out);
    }
    let t = v.triggers.get(id)?;
    Some(json!({
        "training_id": id,
        "model_key": t.model_key,
        "state": "submitted",
        "tenant": tenant,
        "reason": t.reason,
        "priority": t.priority,
        "created_at": t.created_at,
        "message": "waiting for the trainer to queue it",
    }))
}

fn state_of(v: &Views, id: &str) -> Option<String> {
    match v.trainings.get(id) {
        Some(t) => Some(state_name(t.state)),
        None => v.triggers.contains_key(id).then(|| "submitted".into()),
    }
}

/// The training, if it exists and the caller's tenant may see it.
fn visible<'a>(
    v: &'a Views,
    p: &Principal,
    id: &str,
) -> Result<Option<&'a TrainingView>, ApiError> {
    if !v.trainings.contains_key(id) && !v.triggers.contains_key(id) {
        return Err(ApiError::NotFound(format!("no training {id:?}")));
    }
    p.require_tenant(v.training_tenant(id), &format!("training {id}"))?;
    Ok(v.trainings.get(id))
}

/// The longest `model_key` a training may name.
pub const MAX_KEY_CHARS: usize = 256;

/// The request's hyper-parameters as the trainer takes them (text), each
/// checked against its declared [`Kind`]: a wrong type or a value out of
/// range is a 422 naming it. What [`hyperparams_schema`] documents.
fn hyperparams(raw: &BTreeMap<String, Value>) -> Result<Vec<Param>, ApiError> {
    raw.iter()
        .map(|(name, v)| {
            let kind = HYPERPARAMS
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, k)| *k)
                .ok_or_else(|| {
                    ApiError::Unprocessable(format!(
                        "hyperparams: unknown hyper-parameter {name:?} (known: {})",
                        HYPERPARAMS
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
            let value = typed(name, kind, v).map_err(ApiError::Unprocessable)?;
            Ok(Param {
                name: name.clone(),
                value,
            })
        })
        .collect()
}

/// An integer as JSON Schema means it (`3` and `3.0`).
fn integer(v: &Value) -> Option<i128> {
    let n = v.as_number()?;
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 1e30)
                .map(|f| f as i128)
        })
}

fn typed(name: &str, kind: Kind, v: &Value) -> Result<String, String> {
    let name_ok = |s: &str| {
        s.len() <= autotrain_trainer::spec::BOUNDS.name_bytes
            && !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
    };
    match kind {
        Kind::Integer { min, max } => {
            let i =
                integer(v).ok_or_else(|| format!("hyperparams.{name}: {v} is not an integer"))?;
            if i < i128::from(min) || i > i128::from(max) {
                return Err(format!(
                    "hyperparams.{name}: {v} is not between {min} and {max}"
                ));
            }
            Ok(i.to_string())
        }
        Kind::Number { min, max, open } => {
            let x = v
                .as_f64()
                .ok_or_else(|| format!("hyperparams.{name}: {v} is not a number"))?;
            let inside = if open {
                x > min && x < max
            } else {
                x >= min && x <= max
            };
            if !inside {
                let ends = if open { "exclusive" } else { "inclusive" };
                return Err(format!(
                    "hyperparams.{name}: {v} is not between {min} and {max} ({ends})"
                ));
            }
            Ok(x.to_string())
        }
        Kind::OneOf(choices) => match v.as_str() {
            Some(s) if choices.contains(&s) => Ok(s.to_string()),
            _ => Err(format!(
                "hyperparams.{name}: {v} is not one of {}",
                choices.join(", ")
            )),
        },
        Kind::Target => match v.as_str() {
            Some(s) if autotrain_trainer::forecast::Target::parse(s).is_some() => Ok(s.to_string()),
            _ => Err(format!(
                "hyperparams.{name}: {v} is not abs_return:H or realised_vol:H (H 1 to 999999)"
            )),
        },
        Kind::Name => match v.as_str() {
            Some(s) if name_ok(s) => Ok(s.to_string()),
            _ => Err(format!(
                "hyperparams.{name}: {v} does not match {NAME_PATTERN}"
            )),
        },
        Kind::Names { max } => {
            let items = v
                .as_array()
                .filter(|a| (1..=max).contains(&a.len()))
                .ok_or_else(|| {
                    format!("hyperparams.{name}: expected a list of 1 to {max} names")
                })?;
            items
                .iter()
                .map(|i| match i.as_str() {
                    Some(s) if name_ok(s) => Ok(s),
                    _ => Err(format!(
                        "hyperparams.{name}: {i} does not match {NAME_PATTERN}"
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|v| v.join(","))
        }
    }
}

/// The JSON Schema of `hyperparams`, from [`HYPERPARAMS`].
pub fn hyperparams_schema() -> Value {
    let properties: serde_json::Map<String, Value> = HYPERPARAMS
        .iter()
        .map(|(name, kind)| {
            let schema = match *kind {
                Kind::Integer { min, max } => {
                    json!({"type": "integer", "minimum": min, "maximum": max})
                }
                Kind::Number {
                    min,
                    max,
                    open: true,
                } => {
                    json!({"type": "number", "exclusiveMinimum": min, "exclusiveMaximum": max})
                }
                Kind::Number {
                    min,
                    max,
                    open: false,
                } => json!({"type": "number", "minimum": min, "maximum": max}),
                Kind::OneOf(choices) => json!({"type": "string", "enum": choices}),
                Kind::Name => json!({"type": "string", "pattern": NAME_PATTERN}),
                Kind::Target => json!({
                    "type": "string",
                    "pattern": autotrain_trainer::forecast::target::TARGET_PATTERN
                }),
                Kind::Names { max } => json!({
                    "type": "array", "minItems": 1, "maxItems": max,
                    "items": {"type": "string", "pattern": NAME_PATTERN}
                }),
            };
            (name.to_string(), schema)
        })
        .collect();
    json!({
        "type": "object",
        "additionalProperties": false,
        "properties": properties,
        "example": {"states": 3, "mode": "sliding"}
    })
}

pub async fn submit(
    State(s): State<ApiState>,
    p: Principal,
    body: Result<Body<NewTraining>, ApiError>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    p.require(Scope::Train)?;
    let Body(b) = body?;
    if b.model_key.is_empty() {
        return Err(ApiError::Unprocessable("model_key is empty".into()));
    }
    if b.model_key.chars().count() > MAX_KEY_CHARS {
        return Err(ApiError::Unprocessable(format!(
            "model_key is longer than {MAX_KEY_CHARS} characters"
        )));
    }
    if b.run_fetch {
        return Err(ApiError::Unprocessable(
            "run_fetch: fetching bars is a connector's job (`autotrain fetch` publishes them); \
             trainings read what `features` holds — send run_fetch: false"
                .into(),
        ));
    }
    let params = hyperparams(&b.hyperparams)?;
    TrainSpec::with_params(&s.trainer.defaults, &params)
        .map_err(|e| ApiError::Unprocessable(format!("hyperparams: {e}")))?;
    {
        let v = s.views();
        if v.model_tenants.contains_key(&b.model_key) {
            p.require_tenant(
                v.model_tenant(&b.model_key),
                &format!("model {}", b.model_key),
            )?;
        }
    }
    let now = chrono::Utc::now().timestamp_millis();
    let t = TrainingTrigger {
        trigger_id: s.next_id("api"),
        model_key: b.model_key.clone(),
        tenant: p.tenant_for_new(),
        reason: match b.schedule {
            Schedule::Adhoc => TriggerReason::Manual,
            Schedule::Backfill => TriggerReason::Backfill,
        },
        instruments: b.instruments,
        dataset_version: b.dataset_version,
        feature_contract_version: b.feature_contract_version,
        hyperparams: params,
        seed: b.seed,
        priority: match b.priority {
            PriorityArg::Low => Priority::Low,
            PriorityArg::Normal => Priority::Normal,
            PriorityArg::High => Priority::High,
            PriorityArg::Urgent => Priority::Urgent,
        },
        auto_promote: b.auto_promote,
        evidence: None,
        rerun_of: None,
        created_at: now,
        revealed_at: None,
    };
    s.publish(TRAINING_TRIGGERS, &t.model_key, &t).await?;
    let id = training_id(&t);
    let trigger_id = t.trigger_id.clone();
    s.views_mut().on_trigger(t);
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "training_id": id,
            "trigger_id": trigger_id,
            "state": "submitted",
            "href": format!("/api/trainings/{id}"),
        })),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    model_key: Option<String>,
    status: Option<String>,
    page: Option<usize>,
    page_size: Option<usize>,
}

pub async fn list(
    State(s): State<ApiState>,
    p: Principal,
    Query(q): Query<ListArgs>,
) -> Result<Json<Value>, ApiError> {
    p.require(Scope::Read)?;
    if let Some(st) = &q.status {
        if !STATES.contains(&st.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "status {st:?} is not one of {STATES:?}"
            )));
        }
    }
    let page = q.page.unwrap_or(1);
    let page_size = q.page_size.unwrap_or(20);
    if page == 0 || page_size == 0 || page_size > s.config.max_page_size {
        return Err(ApiError::BadRequest(format!(
            "page starts at 1; page_size is 1..={}",
            s.config.max_page_size
        )));
    }
    let v = s.views();
    let mut ids: Vec<(i64, &String)> = v
        .triggers
        .iter()
        .map(|(id, t)| (t.created_at, id))
        .chain(
            v.trainings
                .iter()
                .filter(|(id, _)| !v.triggers.contains_key(*id))
                .map(|(id, t)| (t.created_at, id)),
        )
        .filter(|(_, id)| p.sees(v.training_tenant(id)))
        .filter(|(_, id)| {
            q.model_key.as_ref().is_none_or(|k| {
                v.trainings.get(*id).map(|t| &t.model_key) == Some(k)
                    || v.triggers.get(*id).map(|t| &t.model_key) == Some(k)
            })
        })
        .filter(|(_, id)| {
            q.status
                .as_ref()
                .is_none_or(|st| state_of(&v, id).as_ref() == Some(st))
        })
        .collect();
    ids.sort_by(|a, b| b.cmp(a));
    let total = ids.len();
    let items: Vec<Value> = ids
        .iter()
        .skip((page - 1) * page_size)
        .take(page_size)
        .filter_map(|(_, id)| describe(&v, id, false))
        .collect();
    Ok(Json(json!({
        "items": items,
        "page": page,
        "page_size": page_size,
        "total": total,
        "pages": total.div_ceil(page_size),
    })))
}

pub async fn show(
    State(s): State<ApiState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    p.require(Scope::Read)?;
    let v = s.views();
    visible(&v, &p, &id)?;
    describe(&v, &id, true)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no training {id:?}")))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Why {
    #[serde(default)]
    reason: String,
}

async fn command(
    s: &ApiState,
    p: &Principal,
    id: &str,
    action: CommandAction,
    why: Why,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    p.require(Scope::Train)?;
    let (model_key, state) = {
        let v = s.views();
        let t = visible(&v, p, id)?.ok_or_else(|| {
            ApiError::Conflict(format!(
                "{id} is submitted: the trainer has not queued it yet; try again shortly"
            ))
        })?;
        let allowed = match action {
            CommandAction::Cancel => !t.is_terminal(),
            _ => matches!(t.state, TrainingState::Failed | TrainingState::Cancelled),
        };
        if !allowed {
            return Err(ApiError::Conflict(format!(
                "{id} is {}: cannot {}",
                state_name(t.state),
                format!("{action:?}").to_lowercase()
            )));
        }
        (t.model_key.clone(), state_name(t.state))
    };
    let c = TrainingCommand {
        command_id: s.next_id("cmd"),
        action,
        training_id: Some(id.to_string()),
        model_key: Some(model_key),
        version: None,
        tenant: p.tenant_for_new(),
        actor: p.actor(),
        reason: why.reason,
        at: chrono::Utc::now().timestamp_millis(),
        force: false,
    };
    s.publish(TRAINING_COMMANDS, id, &c).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "command_id": c.command_id,
            "training_id": id,
            "action": format!("{action:?}").to_lowercase(),
            "state_when_sent": state,
        })),
    ))
}

pub async fn cancel(
    State(s): State<ApiState>,
    p: Principal,
    Path(id): Path<String>,
    body: Result<OptionalBody<Why>, ApiError>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    p.require(Scope::Train)?;
    command(&s, &p, &id, CommandAction::Cancel, body?.0).await
}

pub async fn retry(
    State(s): State<ApiState>,
    p: Principal,
    Path(id): Path<String>,
    body: Result<OptionalBody<Why>, ApiError>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    p.require(Scope::Train)?;
    command(&s, &p, &id, CommandAction::Retry, body?.0).await
}

pub async fn rerun(
    State(s): State<ApiState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    p.require(Scope::Train)?;
    let model_key = {
        let v = s.views();
        let t = visible(&v, &p, &id)?
            .filter(|t| t.model_version.is_some())
            .ok_or_else(|| {
                ApiError::Conflict(format!(
                    "{id} registered no model version: there is no manifest to rerun"
                ))
            })?;
        t.model_key.clone()
    };
    let t = rerun_trigger(
        s.next_id("rerun"),
        &model_key,
        &id,
        p.tenant_for_new(),
        chrono::Utc::now().timestamp_millis(),
    );
    s.publish(TRAINING_TRIGGERS, &t.model_key, &t).await?;
    let new_id = training_id(&t);
    s.views_mut().on_trigger(t);
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "training_id": new_id,
            "rerun_of": id,
            "state": "submitted",
            "href": format!("/api/trainings/{new_id}"),
        })),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tail {
    tail: Option<usize>,
}

pub async fn logs(
    State(s): State<ApiState>,
    p: Principal,
    Path(id): Path<String>,
    Query(q): Query<Tail>,
) -> Result<Json<Value>, ApiError> {
    p.require(Scope::Read)?;
    let v = s.views();
    let t = visible(&v, &p, &id)?;
    let when = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms).map_or_else(
            || ms.to_string(),
            |t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        )
    };
    let mut lines: Vec<String> = Vec::new();
    if let Some(trigger) = v.triggers.get(&id) {
        lines.push(format!(
            "{} submitted {:?} by {:?} trigger {}",
            when(trigger.created_at),
            trigger.model_key,
            trigger.reason,
            trigger.trigger_id
        ));
    }
    for e in t.map(|t| t.events.as_slice()).unwrap_or_default() {
        let mut line = format!(
            "{} {} attempt {}",
            when(e.at),
            state_name(e.state),
            e.attempt
        );
        if let Some(stage) = &e.stage {
            line.push_str(&format!(" [{stage} {:.0}%]", e.progress * 100.0));
        }
        if !e.message.is_empty() {
            line.push_str(&format!(": {}", e.message));
        }
        if let Some(err) = &e.error {
            line.push_str(&format!(" — error: {err}"));
        }
        lines.push(line);
    }
    let pruned = t.map_or(0, |t| t.pruned_events);
    if pruned > 0 {
        // After the first event: the rest were cut under retention.
        let at = usize::from(v.triggers.contains_key(&id)) + 1;
        lines.insert(
            at.min(lines.len()),
            format!(
                "… {pruned} event(s) removed under retention ([trainer.retention] logs_days = {})",
                s.trainer.retention.logs_days
            ),
        );
    }
    let total = lines.len();
    let tail = q.tail.unwrap_or(total).min(total);
    Ok(Json(json!({
        "training_id": id,
        "pruned": pruned,
        "total": total,
        "lines": lines[total - tail..],
    })))
}

pub async fn stats(State(s): State<ApiState>, p: Principal) -> Result<Json<Value>, ApiError> {
    p.require(Scope::Read)?;
    let v = s.views();
    let mut by_state: BTreeMap<String, usize> = STATES.iter().map(|s| (s.to_string(), 0)).collect();
    for id in v.triggers.keys().chain(
        v.trainings
            .keys()
            .filter(|id| !v.triggers.contains_key(*id)),
    ) {
        if !p.sees(v.training_tenant(id)) {
            continue;
        }
        if let Some(st) = state_of(&v, id) {
            *by_state.entry(st).or_default() += 1;
        }
    }
    let active = by_state["running"];
    let capacity = s.trainer.capacity;
    Ok(Json(json!({
        "active": active,
        "queued": by_state["queued"] + by_state["submitted"],
        "waiting": by_state["waiting_data"] + by_state["blocked"],
        "capacity": capacity,
        "utilisation": if capacity == 0 { 0.0 } else { active as f64 / capacity as f64 },
        "by_state": by_state,
    })))
}
