//! The sink's tables, created through QuestDB's SQL endpoint (`/exec`)
//! before the first row: ILP alone would create them without their upsert
//! keys, and then a re-sent batch would duplicate rows.

use std::time::Duration;

/// `tables.sql` beside this crate: one `CREATE TABLE IF NOT EXISTS` per
/// table, with `DEDUP UPSERT KEYS`.
pub const TABLES_SQL: &str = include_str!("../tables.sql");

#[derive(Debug, thiserror::Error)]
pub enum TablesError {
    #[error("QuestDB configuration {0:?} has no `addr=host:port;`")]
    NoAddress(String),
    #[error("QuestDB at {url} did not answer: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("QuestDB at {url} refused {statement:?}: {reason}")]
    Refused {
        url: String,
        statement: String,
        reason: String,
    },
}

impl TablesError {
    /// Worth asking again (the server may be starting).
    pub fn is_retriable(&self) -> bool {
        matches!(self, TablesError::Unreachable { .. })
    }
}

/// The statements of [`TABLES_SQL`], comments left out.
pub fn statements() -> Vec<String> {
    let text: String = TABLES_SQL
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    text.split(';')
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
        .collect()
}

/// Where `/exec` is, and the credentials, from a questdb-rs configuration
/// string (`http::addr=h:p;username=…;password=…;` or `token=…;`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlEndpoint {
    pub url: String,
    basic: Option<(String, String)>,
    token: Option<String>,
}

impl SqlEndpoint {
    pub fn from_conf(conf: &str) -> Result<Self, TablesError> {
        let (scheme, rest) = conf
            .trim()
            .split_once("::")
            .ok_or_else(|| TablesError::NoAddress(conf.to_string()))?;
        let field = |name: &str| {
            rest.split(';').find_map(|kv| {
                kv.split_once('=')
                    .filter(|(k, _)| k.trim() == name)
                    .map(|(_, v)| v.trim().to_string())
            })
        };
        let addr = field("addr").ok_or_else(|| TablesError::NoAddress(conf.to_string()))?;
        Ok(SqlEndpoint {
            url: format!("{scheme}://{addr}/exec"),
            basic: field("username").zip(field("password")),
            token: field("token"),
        })
    }

    /// Runs one statement; QuestDB's JSON answer.
    pub async fn exec(
        &self,
        client: &reqwest::Client,
        statement: &str,
    ) -> Result<serde_json::Value, TablesError> {
        let mut request = client
            .get(&self.url)
            .query(&[("query", statement)])
            .timeout(Duration::from_secs(30));
        if let Some((user, password)) = &self.basic {
            request = request.basic_auth(user, Some(password));
        } else if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let unreachable = |e: reqwest::Error| TablesError::Unreachable {
            url: self.url.clone(),
            reason: e.to_string(),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.map_err(unreachable)?;
        if !status.is_success() || body.get("error").is_some() {
            return Err(TablesError::Refused {
                url: self.url.clone(),
                statement: statement.to_string(),
                reason: body
                    .get("error")
                    .and_then(|e| e.as_str())
                    .map_or_else(|| format!("HTTP {status}: {body}"), str::to_string),
            });
        }
        Ok(body)
    }
}

/// Creates every table of [`TABLES_SQL`] that does not exist yet; asks
/// again with backoff for up to `patience` while the server does not
/// answer. Returns how many statements ran.
pub async fn create_tables(conf: &str, patience: Duration) -> Result<usize, TablesError> {
    use backon::{ExponentialBuilder, Retryable};
    let endpoint = SqlEndpoint::from_conf(conf)?;
    let client = reqwest::Client::new();
    let statements = statements();
    for statement in &statements {
        (|| endpoint.exec(&client, statement))
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(5))
                    .with_total_delay(Some(patience))
                    .without_max_times(),
            )
            .when(TablesError::is_retriable)
            .notify(|e, wait| tracing::warn!(error = %e, ?wait, "QuestDB not ready; asking again"))
            .await?;
    }
    Ok(statements.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_is_created_with_its_upsert_keys() {
        let s = statements();
        assert_eq!(s.len(), 4, "{s:#?}");
        for (statement, table) in
            s.iter()
                .zip(["market_bars", "market_flags", "features", "regimes"])
        {
            assert!(
                statement.starts_with(&format!("CREATE TABLE IF NOT EXISTS {table} (")),
                "{statement}"
            );
            assert!(statement.contains("DEDUP UPSERT KEYS(ts,"), "{statement}");
        }
    }

    #[test]
    fn the_sql_endpoint_comes_from_the_ilp_configuration() {
        let e = SqlEndpoint::from_conf("http::addr=127.0.0.1:9000;username=admin;password=quest;")
            .expect("endpoint");
        assert_eq!(e.url, "http://127.0.0.1:9000/exec");
        assert_eq!(e.basic, Some(("admin".into(), "quest".into())));
        let e = SqlEndpoint::from_conf("https::addr=db:9000;token=abc;").expect("endpoint");
        assert_eq!(e.url, "https://db:9000/exec");
        assert_eq!(e.token.as_deref(), Some("abc"));
        assert!(SqlEndpoint::from_conf("http::protocol_version=1;").is_err());
    }
}
