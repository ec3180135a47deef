//! `/openapi.json`: the OpenAPI 3.1 document of every route, with the
//! scope each needs. A test checks that every documented operation is
//! routed.

use serde_json::{json, Map, Value};

/// One operation: method, path, scope (None = public), summary, request
/// body schema, success status.
struct Op {
    method: &'static str,
    path: &'static str,
    scope: Option<&'static str>,
    summary: &'static str,
    body: Option<Value>,
    ok: u16,
}

fn ops() -> Vec<Op> {
    let why = json!({"type": "object", "properties": {"reason": {"type": "string"}}, "additionalProperties": false});
    vec![
        Op { method: "get", path: "/health", scope: None, summary: "200 once the views have read every followed topic; 503 while starting or reconnecting", body: None, ok: 200 },
        Op { method: "get", path: "/metrics", scope: None, summary: "Prometheus / OpenMetrics text: consumer lag, records in/out, dead letters, trainings, durations, promotions, parameter changes, API requests (ml:read unless api.metrics_public)", body: None, ok: 200 },
        Op { method: "get", path: "/openapi.json", scope: None, summary: "This document", body: None, ok: 200 },
        Op { method: "post", path: "/api/trainings", scope: Some("ml:train"), summary: "Submit a training (publishes a TrainingTrigger); returns its training_id", body: Some(json!({
            "type": "object", "required": ["model_key"], "additionalProperties": false,
            "properties": {
                "model_key": model_key_schema(),
                "instruments": {"type": "array", "items": {"type": "string"}},
                "dataset_version": {"type": ["string", "null"]},
                "feature_contract_version": {"type": ["string", "null"]},
                "hyperparams": crate::routes::trainings::hyperparams_schema(),
                "schedule": {"enum": ["adhoc", "backfill"], "default": "adhoc"},
                "auto_promote": {"type": "boolean", "default": false},
                "run_fetch": {"enum": [false], "default": false, "description": "only false: bars come from connectors"},
                "priority": {"enum": ["low", "normal", "high", "urgent"], "default": "normal"},
                "seed": {"type": "integer", "minimum": 0, "maximum": crate::error::MAX_SAFE_INTEGER, "default": 42}
            }})), ok: 202 },
        Op { method: "get", path: "/api/trainings", scope: Some("ml:read"), summary: "Trainings newest first; query model_key, status, page (from 1), page_size", body: None, ok: 200 },
        Op { method: "get", path: "/api/trainings/stats", scope: Some("ml:read"), summary: "active, queued, waiting, capacity, utilisation, by_state", body: None, ok: 200 },
        Op { method: "get", path: "/api/trainings/{id}", scope: Some("ml:read"), summary: "One training: state, stage, progress, metrics, model version, every lifecycle event", body: None, ok: 200 },
        Op { method: "delete", path: "/api/trainings/{id}", scope: Some("ml:train"), summary: "Cancel a training that has not ended (a TrainingCommand)", body: Some(why.clone()), ok: 202 },
        Op { method: "post", path: "/api/trainings/{id}/retry", scope: Some("ml:train"), summary: "Queue a failed or cancelled training again (same id, next attempt)", body: Some(why), ok: 202 },
        Op { method: "post", path: "/api/trainings/{id}/rerun", scope: Some("ml:train"), summary: "Train again from a completed training's manifest; the new version records whether its parameter hash matches", body: None, ok: 202 },
        Op { method: "get", path: "/api/trainings/{id}/logs", scope: Some("ml:read"), summary: "The training's lifecycle as log lines; query tail=N", body: None, ok: 200 },
        Op { method: "get", path: "/api/models", scope: Some("ml:read"), summary: "Model keys with version counts and aliases", body: None, ok: 200 },
        Op { method: "get", path: "/api/models/{model_key}", scope: Some("ml:read"), summary: "Versions (metrics, manifest, tags) and aliases of a model key (the key may hold '/')", body: None, ok: 200 },
        Op { method: "get", path: "/api/models/{model_key}/predict", scope: Some("ml:read"), summary: "A forecast (gbdt) model's prediction for one feature vector under prod, or ?version=N: every column the model reads as a query parameter (?lr=0.001&rvol_20=0.02; empty for missing). 400 names a missing or unknown feature; 422 for an HMM key", body: None, ok: 200 },
        Op { method: "post", path: "/api/models/{model_key}/promote", scope: Some("ml:write"), summary: "Move prod to a version (a TrainingCommand to the trainer)", body: Some(json!({"type": "object", "required": ["model_version"], "additionalProperties": false, "properties": {"model_version": {"type": "integer", "minimum": 1, "maximum": 2147483647}, "reason": {"type": "string"}, "force": {"type": "boolean", "enum": [false], "description": "rollback only"}, "plan": {"type": "boolean", "enum": [false], "description": "rollback only"}}})), ok: 202 },
        Op { method: "post", path: "/api/models/{model_key}/rollback", scope: Some("ml:write"), summary: "Move prod back to an older version after the trainer re-scores it on prod's reference set: the trainer refuses (dead letter with the reason) one that scores below prod by more than [trainer.guardrails] rollback_tolerance unless force is set with a reason. With plan: true, the API re-scores it here and answers the verdict (200) without sending anything", body: Some(json!({"type": "object", "required": ["model_version"], "additionalProperties": false, "properties": {"model_version": {"type": "integer", "minimum": 1, "maximum": 2147483647}, "reason": {"type": "string"}, "force": {"type": "boolean"}, "plan": {"type": "boolean"}}})), ok: 202 },
        Op { method: "get", path: "/api/features/{instrument}/window", scope: Some("ml:read"), summary: "The instrument's training window now: per feature n, mean, std over the last api.feature_window_days days up to its newest bar (differential dataflow over features; corrections replace what they correct)", body: None, ok: 200 },
        Op { method: "get", path: "/api/instruments", scope: Some("ml:read"), summary: "Instruments with chart series: closes (market.bars) and regimes (regimes) kept, first and last bar time", body: None, ok: 200 },
        Op { method: "get", path: "/api/instruments/{instrument}/chart", scope: Some("ml:read"), summary: "The newest closes ([ts, close], query limit=1..5000, default 2000), the regimes over them ([ts, regime, p, model_version]) and the flags on them: the dashboard's price chart", body: None, ok: 200 },
        Op { method: "get", path: "/api/params", scope: Some("ml:read"), summary: "The parameter controller at a glance: the preset in force per strategy and instrument, kill-switches, trades and reward per preset (the safe one marked), the newest changes", body: None, ok: 200 },
        Op { method: "get", path: "/api/whoami", scope: Some("ml:read"), summary: "The caller: token name, scopes, tenant", body: None, ok: 200 },
        Op { method: "get", path: "/api/flags", scope: Some("ml:read"), summary: "Validation flags; query state=pending|open|decided|all, instrument", body: None, ok: 200 },
        Op { method: "get", path: "/api/flags/{id}", scope: Some("ml:read"), summary: "One flag as raised and as it stands", body: None, ok: 200 },
        Op { method: "post", path: "/api/flags/{id}/{action}", scope: Some("ml:write"), summary: "approve | reject | override a flag (platform token)", body: Some(json!({"type": "object", "properties": {"reason": {"type": "string"}}, "additionalProperties": false})), ok: 200 },
        Op { method: "post", path: "/preset/register/{strategy}/{instrument}", scope: Some("ml:write"), summary: "Register a preset for a strategy on an instrument; checked against the strategy schema's bounds (400 with the reason)", body: Some(json!({"type": "object", "required": ["preset_id", "params"], "additionalProperties": false, "properties": {"preset_id": {"type": "string"}, "params": {"type": "object", "additionalProperties": {"type": "number"}}}})), ok: 201 },
        Op { method: "get", path: "/param/{strategy}/{instrument}", scope: Some("ml:read"), summary: "The policy's choice for the latest regime and features[name]=value: config_id, preset, params, context, scores", body: None, ok: 200 },
        Op { method: "post", path: "/param/{strategy}/{instrument}/resume", scope: Some("ml:write"), summary: "Reset a tripped kill-switch (platform token): a manual update on param.updates, from the bar after the newest posterior, with the actor and reason; 409 when the kill-switch does not hold", body: Some(json!({"type": "object", "required": ["reason"], "additionalProperties": false, "properties": {"reason": {"type": "string", "minLength": 1}}})), ok: 202 },
        Op { method: "post", path: "/learn/outcome/{strategy}/{instrument}/{preset_id}", scope: Some("ml:train"), summary: "A realised reward for a decision (published on trade.outcomes; platform token)", body: Some(json!({"type": "object", "required": ["reward"], "additionalProperties": false, "properties": {"reward": {"type": "number"}, "baseline_reward": {"type": "number"}, "config_id": {"type": "string"}, "context": {"type": "array", "items": {"type": "number"}}, "trade_id": {"type": "string"}, "ts": {"type": "integer", "minimum": 0, "maximum": crate::error::MAX_SAFE_INTEGER}}})), ok: 202 },
    ]
}

/// A model key, in a body and in a path alike: a link from a path to a body
/// (schemathesis infers those) must not carry a key the body refuses.
/// A model key: any 1..=MAX_KEY_CHARS characters. The server checks the same two
/// bounds and nothing else, so any value a client draws from the schema, or carries
/// over from another operation's path, is accepted (a "not blank" rule by regex
/// meant one thing to the server and another to clients: CI stops 22 and 23).
fn model_key_schema() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": crate::routes::trainings::MAX_KEY_CHARS, "example": "hmm/bitfinex:BTCUSD"})
}

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for op in ops() {
        let params: Vec<Value> = op
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                let schema = if name == "model_key" {
                    model_key_schema()
                } else {
                    json!({"type": "string"})
                };
                json!({"name": name, "in": "path", "required": true, "schema": schema})
            })
            .collect();
        let mut responses = Map::new();
        let media = if op.path == "/metrics" {
            "application/openmetrics-text"
        } else {
            "application/json"
        };
        responses.insert(
            op.ok.to_string(),
            json!({"description": "success", "content": {media: {}}}),
        );
        if op.path == "/api/models/{model_key}/rollback" {
            responses.insert(
                "200".into(),
                json!({"description": "plan: true — the re-score and the verdict, nothing sent", "content": {"application/json": {}}}),
            );
        }
        responses.insert("400".into(), error_response("malformed request"));
        responses.insert(
            "414".into(),
            error_response("request target longer than 8,192 bytes"),
        );
        responses.insert(
            "503".into(),
            error_response("views still loading or the broker unreachable: retry"),
        );
        if op.method != "get" && op.path.contains('{') {
            responses.insert(
                "409".into(),
                error_response("the resource's state does not allow the action"),
            );
        }
        if op.scope.is_some() {
            responses.insert("401".into(), error_response("no or unknown bearer token"));
            responses.insert(
                "403".into(),
                error_response("token lacks the scope or the tenant"),
            );
            responses.insert("404".into(), error_response("no such resource"));
        }
        if op.body.is_some() || op.path.ends_with("/predict") {
            responses.insert(
                "422".into(),
                error_response("well-formed but refused, with the reason"),
            );
        }
        let mut operation = json!({
            "summary": op.summary,
            "parameters": params,
            "responses": responses,
        });
        if let Some(scope) = op.scope {
            operation["security"] = json!([{"bearer": [scope]}]);
            operation["x-scope"] = json!(scope);
        } else {
            operation["security"] = json!([]);
        }
        if let Some(body) = op.body {
            operation["requestBody"] = json!({"required": op.method != "delete", "content": {"application/json": {"schema": body}}});
        }
        let entry = paths
            .entry(op.path.to_string())
            .or_insert_with(|| json!({}));
        entry[op.method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "autotrain control plane",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Commands are events on Kafka topics; reads come from views folded from topics. Bearer tokens carry scopes (ml:read, ml:train, ml:write) and a tenant (`*` = platform)."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {
                "type": "object",
                "properties": {"error": {"type": "object", "properties": {
                    "status": {"type": "integer"}, "code": {"type": "string"}, "message": {"type": "string"}
                }}}
            }}
        }
    })
}

/// Every documented (method, path), for the routing test.
pub fn operations() -> Vec<(&'static str, &'static str, Option<&'static str>)> {
    ops()
        .into_iter()
        .map(|o| (o.method, o.path, o.scope))
        .collect()
}
