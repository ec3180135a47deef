//! `/api/features/{instrument}/window`: the instrument's training window
//! as it stands — per feature the count, mean and sample std over the
//! last `api.feature_window_days` days up to its newest bar — kept by the
//! views' differential dataflow from `features` (late corrections
//! replace the rows they correct). What the next sliding training would
//! standardise by, and what drift is measured against.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Map, Value};

use crate::auth::Principal;
use crate::config::Scope;
use crate::error::{ApiError, Path};
use crate::state::ApiState;

pub async fn window(
    State(s): State<ApiState>,
    p: Principal,
    Path(instrument): Path<String>,
) -> Result<Json<Value>, ApiError> {
    p.require(Scope::Read)?;
    let v = s.views();
    let now = v
        .windows
        .get(&instrument)
        .map_err(ApiError::Unavailable)?
        .ok_or_else(|| ApiError::NotFound(format!("no feature rows for {instrument:?}")))?;
    let (sent, done) = v.windows.progress();
    let number = |x: f64| if x.is_finite() { json!(x) } else { Value::Null };
    let features: Map<String, Value> = now
        .features
        .iter()
        .map(|(name, m)| {
            (
                name.clone(),
                json!({"n": m.n, "mean": number(m.mean), "std": number(m.std())}),
            )
        })
        .collect();
    let newest = chrono::DateTime::from_timestamp_millis(now.newest_bucket_ms)
        .map(|t| t.format("%Y-%m-%d").to_string());
    Ok(Json(json!({
        "instrument": instrument,
        "days": now.buckets * now.bucket_ms / 86_400_000,
        "newest_day": newest,
        "features": features,
        "rows_pending": sent.saturating_sub(done),
    })))
}
