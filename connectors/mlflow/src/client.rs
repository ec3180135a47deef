//! MLflow's REST API, the calls the mirror makes. Every call is one HTTP
//! request; nothing is cached here (the mirror keeps what it learnt).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum MlflowError {
    /// No answer (connection refused, timeout): MLflow is down.
    #[error("MLflow at {url} did not answer: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// MLflow answered with an error.
    #[error("MLflow {path} answered {status} {code}: {message}")]
    Answered {
        path: String,
        status: u16,
        code: String,
        message: String,
    },
    /// An answer the mirror cannot read, or a state it must not overwrite.
    #[error("MLflow {0}")]
    Unexpected(String),
}

impl MlflowError {
    /// Worth retrying: MLflow down, overloaded or failing inside.
    pub fn is_retriable(&self) -> bool {
        match self {
            MlflowError::Unreachable { .. } => true,
            MlflowError::Answered { status, .. } => {
                *status >= 500 || *status == 408 || *status == 429
            }
            MlflowError::Unexpected(_) => false,
        }
    }

    fn is(&self, wanted: &str) -> bool {
        matches!(self, MlflowError::Answered { code, .. } if code == wanted)
    }

    pub fn not_found(&self) -> bool {
        self.is("RESOURCE_DOES_NOT_EXIST")
    }

    pub fn already_exists(&self) -> bool {
        self.is("RESOURCE_ALREADY_EXISTS")
    }
}

impl From<MlflowError> for autotrain_kafka::ProcessError {
    fn from(e: MlflowError) -> Self {
        if e.is_retriable() {
            autotrain_kafka::ProcessError::Retriable(e.to_string())
        } else {
            autotrain_kafka::ProcessError::invalid(e.to_string())
        }
    }
}

/// A run as MLflow reports it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RunInfo {
    pub run_id: String,
    pub experiment_id: String,
    pub status: String,
    pub artifact_uri: String,
    #[serde(default)]
    pub run_name: String,
}

/// A registered model version as MLflow reports it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ModelVersionInfo {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub run_id: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

impl ModelVersionInfo {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|t| t.key == key)
            .map(|t| t.value.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

fn tags(pairs: &[(String, String)]) -> Value {
    pairs
        .iter()
        .map(|(k, v)| json!({ "key": k, "value": v }))
        .collect()
}

/// Single quotes in a search filter's string literal.
fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[derive(Debug, Clone)]
pub struct MlflowClient {
    base: String,
    http: reqwest::Client,
}

impl MlflowClient {
    pub fn new(tracking_uri: &str, timeout: Duration) -> Result<Self, MlflowError> {
        let url = reqwest::Url::parse(tracking_uri)
            .map_err(|e| MlflowError::Unexpected(format!("tracking URI {tracking_uri:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(MlflowError::Unexpected(format!(
                "tracking URI {tracking_uri:?}: the mirror speaks MLflow's REST API, use http:// or https://"
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| MlflowError::Unexpected(format!("HTTP client: {e}")))?;
        Ok(MlflowClient {
            base: tracking_uri.trim_end_matches('/').to_string(),
            http,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn send(
        &self,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Value, MlflowError> {
        let response = request
            .send()
            .await
            .map_err(|source| MlflowError::Unreachable {
                url: self.base.clone(),
                source,
            })?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|source| MlflowError::Unreachable {
                url: self.base.clone(),
                source,
            })?;
        let value: Value = if body.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(&body).unwrap_or_else(|_| json!({ "message": body }))
        };
        if status.is_success() {
            return Ok(value);
        }
        Err(MlflowError::Answered {
            path: path.to_string(),
            status: status.as_u16(),
            code: value["error_code"].as_str().unwrap_or("").to_string(),
            message: value["message"]
                .as_str()
                .unwrap_or("")
                .chars()
                .take(300)
                .collect(),
        })
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, MlflowError> {
        let url = format!("{}/api/2.0/mlflow/{path}", self.base);
        self.send(path, self.http.post(url).json(&body)).await
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, MlflowError> {
        let url = format!("{}/api/2.0/mlflow/{path}", self.base);
        self.send(path, self.http.get(url).query(query)).await
    }

    fn field<T: serde::de::DeserializeOwned>(
        value: &Value,
        pointer: &str,
    ) -> Result<T, MlflowError> {
        value
            .pointer(pointer)
            .cloned()
            .ok_or_else(|| MlflowError::Unexpected(format!("answer without {pointer}: {value}")))
            .and_then(|v| {
                serde_json::from_value(v)
                    .map_err(|e| MlflowError::Unexpected(format!("{pointer}: {e}")))
            })
    }

    /// The experiment's id, created when missing.
    pub async fn experiment(&self, name: &str) -> Result<String, MlflowError> {
        match self
            .get("experiments/get-by-name", &[("experiment_name", name)])
            .await
        {
            Ok(v) => return Self::field(&v, "/experiment/experiment_id"),
            Err(e) if e.not_found() => {}
            Err(e) => return Err(e),
        }
        match self
            .post("experiments/create", json!({ "name": name }))
            .await
        {
            Ok(v) => Self::field(&v, "/experiment_id"),
            Err(e) if e.already_exists() => {
                let v = self
                    .get("experiments/get-by-name", &[("experiment_name", name)])
                    .await?;
                Self::field(&v, "/experiment/experiment_id")
            }
            Err(e) => Err(e),
        }
    }

    /// Runs of an experiment carrying every `(tag, value)` of `identity`.
    pub async fn find_runs(
        &self,
        experiment_id: &str,
        identity: &[(String, String)],
    ) -> Result<Vec<RunInfo>, MlflowError> {
        let filter = identity
            .iter()
            .map(|(k, v)| format!("tags.`{k}` = {}", quoted(v)))
            .collect::<Vec<_>>()
            .join(" and ");
        let v = self
            .post(
                "runs/search",
                json!({ "experiment_ids": [experiment_id], "filter": filter, "max_results": 10 }),
            )
            .await?;
        let runs = v["runs"].as_array().cloned().unwrap_or_default();
        runs.iter().map(|r| Self::field(r, "/info")).collect()
    }

    /// Every run of an experiment (pages followed).
    pub async fn runs(&self, experiment_id: &str) -> Result<Vec<Value>, MlflowError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut body = json!({ "experiment_ids": [experiment_id], "max_results": 1000 });
            if let Some(t) = &token {
                body["page_token"] = json!(t);
            }
            let v = self.post("runs/search", body).await?;
            out.extend(v["runs"].as_array().cloned().unwrap_or_default());
            match v["next_page_token"].as_str() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(out),
            }
        }
    }

    pub async fn create_run(
        &self,
        experiment_id: &str,
        run_name: &str,
        start_time: i64,
        tags: &[(String, String)],
    ) -> Result<RunInfo, MlflowError> {
        let v = self
            .post(
                "runs/create",
                json!({
                    "experiment_id": experiment_id,
                    "run_name": run_name,
                    "start_time": start_time,
                    "tags": self::tags(tags),
                }),
            )
            .await?;
        Self::field(&v, "/run/info")
    }

    /// Params, metrics and tags in batches within MLflow's limits (100
    /// params, 1,000 metrics, 100 tags per request).
    pub async fn log(
        &self,
        run_id: &str,
        params: &[(String, String)],
        metrics: &[(String, f64)],
        tags: &[(String, String)],
        timestamp: i64,
    ) -> Result<(), MlflowError> {
        let metric = |(k, v): &(String, f64)| json!({ "key": k, "value": v, "timestamp": timestamp, "step": 0 });
        if params.len() <= 100
            && tags.len() <= 100
            && params.len() + metrics.len() + tags.len() <= 1000
        {
            // The usual case: one request.
            let params: Vec<Value> = params
                .iter()
                .map(|(k, v)| json!({ "key": k, "value": v }))
                .collect();
            let metrics: Vec<Value> = metrics.iter().map(metric).collect();
            return self
                .post(
                    "runs/log-batch",
                    json!({ "run_id": run_id, "params": params, "metrics": metrics, "tags": self::tags(tags) }),
                )
                .await
                .map(|_| ());
        }
        for chunk in params.chunks(100) {
            let params: Vec<Value> = chunk
                .iter()
                .map(|(k, v)| json!({ "key": k, "value": v }))
                .collect();
            self.post(
                "runs/log-batch",
                json!({ "run_id": run_id, "params": params }),
            )
            .await?;
        }
        for chunk in metrics.chunks(1000) {
            let metrics: Vec<Value> = chunk.iter().map(metric).collect();
            self.post(
                "runs/log-batch",
                json!({ "run_id": run_id, "metrics": metrics }),
            )
            .await?;
        }
        for chunk in tags.chunks(100) {
            self.post(
                "runs/log-batch",
                json!({ "run_id": run_id, "tags": self::tags(chunk) }),
            )
            .await?;
        }
        Ok(())
    }

    /// Uploads one artifact through the server's artifact proxy. Only runs
    /// whose artifact root is `mlflow-artifacts:/…` (a server that serves
    /// artifacts) can take one: `Ok(false)` for any other.
    pub async fn upload(
        &self,
        artifact_uri: &str,
        path: &str,
        bytes: Vec<u8>,
    ) -> Result<bool, MlflowError> {
        let Some(root) = artifact_uri.strip_prefix("mlflow-artifacts:") else {
            return Ok(false);
        };
        // `mlflow-artifacts:/1/<run>/artifacts`, or `mlflow-artifacts://host:port/1/…`.
        let root = match root.strip_prefix("//") {
            Some(authority_and_path) => authority_and_path
                .split_once('/')
                .map_or("", |(_, path)| path),
            None => root,
        };
        let url = format!(
            "{}/api/2.0/mlflow-artifacts/artifacts/{}/{path}",
            self.base,
            root.trim_matches('/')
        );
        self.send("mlflow-artifacts", self.http.put(url).body(bytes))
            .await
            .map(|_| true)
    }

    pub async fn finish_run(
        &self,
        run_id: &str,
        status: &str,
        end_time: i64,
    ) -> Result<(), MlflowError> {
        self.post(
            "runs/update",
            json!({ "run_id": run_id, "status": status, "end_time": end_time }),
        )
        .await
        .map(|_| ())
    }

    /// The registered model's tags, or `None` when it does not exist.
    pub async fn registered_model(
        &self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, MlflowError> {
        match self.get("registered-models/get", &[("name", name)]).await {
            Ok(v) => {
                let tags: Vec<Tag> = v
                    .pointer("/registered_model/tags")
                    .cloned()
                    .map(serde_json::from_value)
                    .transpose()
                    .map_err(|e| MlflowError::Unexpected(format!("registered model tags: {e}")))?
                    .unwrap_or_default();
                Ok(Some(tags.into_iter().map(|t| (t.key, t.value)).collect()))
            }
            Err(e) if e.not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Aliases of a registered model: alias → MLflow version.
    pub async fn aliases(&self, name: &str) -> Result<BTreeMap<String, String>, MlflowError> {
        let v = self.get("registered-models/get", &[("name", name)]).await?;
        Ok(v.pointer("/registered_model/aliases")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| {
                        Some((
                            x["alias"].as_str()?.to_string(),
                            x["version"].as_str()?.to_string(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    pub async fn create_registered_model(
        &self,
        name: &str,
        description: &str,
        tags: &[(String, String)],
    ) -> Result<(), MlflowError> {
        match self
            .post(
                "registered-models/create",
                json!({ "name": name, "description": description, "tags": self::tags(tags) }),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.already_exists() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every version of a registered model (pages followed).
    pub async fn versions(&self, name: &str) -> Result<Vec<ModelVersionInfo>, MlflowError> {
        let filter = format!("name = {}", quoted(name));
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let mut query = vec![("filter", filter.as_str()), ("max_results", "1000")];
            if !token.is_empty() {
                query.push(("page_token", token.as_str()));
            }
            let v = self.get("model-versions/search", &query).await?;
            if let Some(list) = v.get("model_versions") {
                let page: Vec<ModelVersionInfo> = serde_json::from_value(list.clone())
                    .map_err(|e| MlflowError::Unexpected(format!("model versions: {e}")))?;
                out.extend(page);
            }
            match v["next_page_token"].as_str() {
                Some(t) if !t.is_empty() => token = t.to_string(),
                _ => return Ok(out),
            }
        }
    }

    pub async fn create_version(
        &self,
        name: &str,
        source: &str,
        run_id: &str,
        description: &str,
        tags: &[(String, String)],
    ) -> Result<ModelVersionInfo, MlflowError> {
        let v = self
            .post(
                "model-versions/create",
                json!({
                    "name": name,
                    "source": source,
                    "run_id": run_id,
                    "description": description,
                    "tags": self::tags(tags),
                }),
            )
            .await?;
        Self::field(&v, "/model_version")
    }

    pub async fn set_alias(
        &self,
        name: &str,
        alias: &str,
        version: &str,
    ) -> Result<(), MlflowError> {
        self.post(
            "registered-models/alias",
            json!({ "name": name, "alias": alias, "version": version }),
        )
        .await
        .map(|_| ())
    }

    pub async fn set_version_tag(
        &self,
        name: &str,
        version: &str,
        key: &str,
        value: &str,
    ) -> Result<(), MlflowError> {
        self.post(
            "model-versions/set-tag",
            json!({ "name": name, "version": version, "key": key, "value": value }),
        )
        .await
        .map(|_| ())
    }

    /// Experiments whose names start with `prefix`.
    pub async fn experiments(&self, prefix: &str) -> Result<Vec<(String, String)>, MlflowError> {
        let v = self
            .post(
                "experiments/search",
                json!({ "max_results": 1000, "filter": format!("name LIKE {}", quoted(&format!("{prefix}%"))) }),
            )
            .await?;
        Ok(v["experiments"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| {
                        Some((
                            e["name"].as_str()?.to_string(),
                            e["experiment_id"].as_str()?.to_string(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_quote_their_literals() {
        assert_eq!(quoted("a'b"), "'a\\'b'");
    }

    #[test]
    fn only_http_tracking_uris() {
        assert!(MlflowClient::new("file:///tmp/mlruns", Duration::from_secs(1)).is_err());
        assert!(
            MlflowClient::new("http://127.0.0.1:5000/", Duration::from_secs(1))
                .is_ok_and(|c| c.base() == "http://127.0.0.1:5000")
        );
    }
}
