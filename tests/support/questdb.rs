//! A QuestDB server of the test's own (`scripts/questdb`, the Maven
//! Central jar run with `java`), in its own directory and port: start,
//! kill, restart on the same data, and SQL over its `/exec` endpoint.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::repo_root;

#[derive(Debug)]
pub struct QuestDb {
    pub port: u16,
    dir: tempfile::TempDir,
}

impl QuestDb {
    /// Starts a server on a free port; a start that fails (a JVM on two
    /// busy cores) is tried once more.
    pub fn start() -> Result<Self> {
        let attempt = || -> Result<Self> {
            let q = QuestDb {
                port: crate::free_port(),
                dir: tempfile::tempdir()?,
            };
            q.script("start")?;
            Ok(q)
        };
        attempt().or_else(|e| {
            eprintln!("a test QuestDB did not start ({e:#}); trying once more");
            attempt()
        })
    }

    fn script(&self, cmd: &str) -> Result<()> {
        let mut c = Command::new(repo_root().join("scripts/questdb"));
        c.arg(cmd)
            .args(["--port", &self.port.to_string()])
            .arg("--dir")
            .arg(self.dir.path());
        crate::run_tool(&mut c, &format!("scripts/questdb {cmd}"))
    }

    /// SIGKILL, as in a crash.
    pub fn kill(&mut self) -> Result<()> {
        self.script("kill")
    }

    /// Starts again on the same port and data.
    pub fn restart(&mut self) -> Result<()> {
        self.script("start")
    }

    /// The sink's configuration string for this server (questdb-rs's own
    /// retries off, so failures reach the sink's retry loop).
    pub fn conf(&self) -> String {
        format!("http::addr=127.0.0.1:{};retry_timeout=0;", self.port)
    }

    /// Runs one SQL statement; QuestDB's JSON answer (an `error` field
    /// becomes an error).
    pub async fn sql(&self, query: &str) -> Result<serde_json::Value> {
        let body: serde_json::Value = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/exec", self.port))
            .query(&[("query", query)])
            .timeout(Duration::from_secs(30))
            .send()
            .await?
            .json()
            .await?;
        if let Some(e) = body.get("error") {
            bail!("QuestDB refused {query:?}: {e}");
        }
        Ok(body)
    }

    /// The rows of a query (`dataset`).
    pub async fn rows(&self, query: &str) -> Result<Vec<Vec<serde_json::Value>>> {
        let body = self.sql(query).await?;
        Ok(serde_json::from_value(body["dataset"].clone())?)
    }

    /// `count()` of a query, once the tables' write-ahead logs are applied
    /// (QuestDB applies WAL tables asynchronously): asks until it reads
    /// `want`, or returns what it reads after `limit`.
    pub async fn count_reaching(&self, from: &str, want: i64, limit: Duration) -> Result<i64> {
        let deadline = Instant::now() + limit;
        loop {
            let n = match self.rows(&format!("SELECT count() FROM {from}")).await {
                Ok(rows) => rows
                    .first()
                    .and_then(|r| r.first())
                    .and_then(serde_json::Value::as_i64)
                    .unwrap_or(0),
                Err(e) if Instant::now() < deadline => {
                    eprintln!("count of {from}: {e:#}; asking again");
                    0
                }
                Err(e) => return Err(e),
            };
            if n == want || Instant::now() > deadline {
                return Ok(n);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for QuestDb {
    fn drop(&mut self) {
        let _ = self.script("kill");
    }
}
