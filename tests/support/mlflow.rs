//! An MLflow tracking server of the test's own (`scripts/mlflow`: PyPI's
//! `mlflow` in a cached virtualenv, SQLite backend, artifacts served), in
//! its own directory and port: start, stop, start again on the same data.

use std::process::Command;

use anyhow::Result;

use crate::repo_root;

#[derive(Debug)]
pub struct Mlflow {
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Mlflow {
    /// A server on a free port, not started yet.
    pub fn new() -> Result<Self> {
        Ok(Mlflow {
            port: crate::free_port(),
            dir: tempfile::tempdir()?,
        })
    }

    /// Starts it (again, on the same data), waiting until it answers.
    pub fn start(&self) -> Result<()> {
        self.script("start")
    }

    pub fn stop(&self) -> Result<()> {
        self.script("stop")
    }

    pub fn uri(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn script(&self, cmd: &str) -> Result<()> {
        let mut c = Command::new(repo_root().join("scripts/mlflow"));
        c.arg(cmd)
            .args(["--port", &self.port.to_string()])
            .arg("--dir")
            .arg(self.dir.path());
        crate::run_tool(&mut c, &format!("scripts/mlflow {cmd}"))
    }
}

impl Drop for Mlflow {
    fn drop(&mut self) {
        let _ = self.script("stop");
    }
}
