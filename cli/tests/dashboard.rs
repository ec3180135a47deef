//! The dashboard in a real browser: `autotrain demo --keep-running` on two
//! instruments whose bars each jump once (two held anomalies), with a
//! writer and a reader token; `tests/browser/dashboard.py` drives headless
//! Chromium (Debian's `chromium` + `chromium-driver`, Selenium from PyPI;
//! `.ci/run` installs them) through the page: the chart renders with data,
//! an approval in the page decides the flag and releases the bar, the
//! reader sees no button and the server refuses it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use autotrain_integration_tests::{jumpy_csv, repo_root};

struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_dashboard_in_a_real_browser() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    // 2,000 hourly bars cross a quarter: the demo's scheduled training
    // gives each instrument a model, and the chart its regimes.
    jumpy_csv(&data.join("test_AAA_1h.csv"), 2_000, 1_500)?;
    jumpy_csv(&data.join("test_BBB_1h.csv"), 2_000, 1_700)?;
    let (writer, reader) = (
        "writer-token-for-the-browser-test",
        "reader-token-for-the-browser-test",
    );
    let hash = autotrain_api::auth::hash_token;
    let config = dir.path().join("autotrain.toml");
    std::fs::write(
        &config,
        format!(
            "[[api.tokens]]\nname = \"writer\"\nsha256 = \"{}\"\nscopes = [\"ml:read\", \"ml:train\", \"ml:write\"]\ntenant = \"*\"\n\n\
             [[api.tokens]]\nname = \"reader\"\nsha256 = \"{}\"\nscopes = [\"ml:read\"]\ntenant = \"*\"\n\n\
             # The generated bars trade badly; their models still go to\n\
             # prod, so that the chart has regimes.\n\
             [trainer.guardrails]\nmax_drawdown = 100.0\n",
            hash(writer),
            hash(reader)
        ),
    )?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_autotrain"))
        .args(["--config"])
        .arg(&config)
        .args([
            "demo",
            "--keep-running",
            "--api-bind",
            &format!("127.0.0.1:{port}"),
            "--data",
        ])
        .arg(&data)
        .env_remove("AUTOTRAIN_BROKERS")
        .env("AUTOTRAIN__LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().context("stderr")?;
    let demo = Demo(child);
    // The demo says where its API is once the run is done and it stays up.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut said = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => {
                let up = line.contains("Ctrl-C to stop");
                said.push(line);
                if up {
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(e) => bail!("the demo ended: {e}\n{}", said.join("\n")),
        }
        if Instant::now() > deadline {
            bail!("the demo never stayed up:\n{}", said.join("\n"));
        }
    }
    let shot = dir.path().join("dashboard.png");
    let out = Command::new("python3")
        .arg(repo_root().join("tests/browser/dashboard.py"))
        .arg(format!("http://127.0.0.1:{port}"))
        .args([writer, reader])
        .arg(&shot)
        .output()
        .context("python3 tests/browser/dashboard.py")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    anyhow::ensure!(out.status.success(), "the browser test failed: {text}");
    // A screenshot that is an image and not nearly empty.
    let png = std::fs::read(&shot)?;
    anyhow::ensure!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "screenshot of {} bytes",
        png.len()
    );
    // Kept for a look: target/dashboard.png.
    let _ = std::fs::write(repo_root().join("target/dashboard.png"), &png);
    drop(demo);
    Ok(())
}
