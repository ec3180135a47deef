//! The `autotrain` binary as a user runs it: help everywhere, the demo on
//! real files (with an unreadable row), and the ops tools against a real
//! Apache Kafka: topics create/list/check (including a cluster whose configs
//! would lose an event log), produce, tail; the review queue
//! (`run validator`, `flags`) against `autotrain up`; `serve` with a token
//! made by `token`.

use std::path::Path;
use std::process::{Command, Output};

use anyhow::{ensure, Context as _, Result};
use autotrain_integration_tests::{data_file, jumpy_csv, set_topic_configs, shared_kafka, unique};

fn autotrain(args: &[&str]) -> Result<Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_autotrain"))
        .args(args)
        .env_remove("AUTOTRAIN_BROKERS")
        .env("AUTOTRAIN__LOG__LEVEL", "warn")
        .output()?)
}

fn ok(args: &[&str]) -> Result<String> {
    let out = autotrain(args)?;
    ensure!(
        out.status.success(),
        "autotrain {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

#[test]
fn every_subcommand_has_help() -> Result<()> {
    let top = ok(&["--help"])?;
    for cmd in [
        "up",
        "topics",
        "produce",
        "fetch",
        "generate",
        "tail",
        "run",
        "flags",
        "demo",
        "validate",
        "features",
        "training-set",
        "train",
        "trainings",
        "models",
        "serve",
        "token",
        "bench",
    ] {
        assert!(top.contains(cmd), "top-level help lists {cmd}");
        let help = ok(&[cmd, "--help"])?;
        assert!(help.contains("Usage"), "{cmd} --help");
    }
    for sub in [
        ["topics", "create"],
        ["topics", "list"],
        ["topics", "check"],
        ["bench", "wire"],
        ["bench", "validate"],
        ["bench", "features"],
        ["bench", "drift"],
        ["bench", "hmm"],
        ["fit", "hmm"],
        ["run", "drift"],
        ["run", "scheduler"],
        ["run", "regime"],
        ["run", "forecast"],
        ["run", "mlflow"],
        ["fit", "gbdt"],
        ["models", "export"],
        ["models", "posteriors"],
        ["run", "validator"],
        ["run", "questdb"],
        ["run", "notify"],
        ["run", "features"],
        ["run", "trainer"],
        ["run", "params"],
        ["run", "engine"],
        ["bench", "params"],
        ["bench", "pipeline"],
        ["trainings", "list"],
        ["trainings", "show"],
        ["trainings", "cancel"],
        ["trainings", "retry"],
        ["trainings", "rerun"],
        ["models", "list"],
        ["models", "show"],
        ["models", "promote"],
        ["models", "rollback"],
        ["flags", "list"],
        ["flags", "approve"],
        ["flags", "reject"],
        ["flags", "override"],
        ["params", "status"],
        ["params", "resume"],
    ] {
        ok(&[sub[0], sub[1], "--help"])?;
    }
    Ok(())
}

/// `bench pipeline` on the embedded broker: every bar the validator passes
/// becomes a feature row, and each stage's profile covers its inputs.
#[test]
fn the_pipeline_bench_profiles_every_bar() -> Result<()> {
    let out = ok(&["bench", "pipeline", "--bars", "3000"])?;
    let head = out.lines().next().unwrap_or_default();
    let number = |after: &str, before: &str| -> Result<u64> {
        let tail = head
            .split_once(after)
            .with_context(|| format!("{after:?} in {head}"))?
            .1;
        Ok(tail
            .split_once(before)
            .with_context(|| format!("{before:?} in {tail}"))?
            .0
            .trim()
            .parse()?)
    };
    let passed = number("3000 bars (", " passed)")?;
    let rows = number("bars/s end to end (", " feature rows)")?;
    assert!(passed > 2_900 && passed == rows, "{out}");
    let inputs = |stage: &str| -> Result<(u64, Vec<f64>)> {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(stage))
            .with_context(|| format!("{stage} in {out}"))?;
        let cells: Vec<&str> = line.split_whitespace().collect();
        let figures = cells[3..]
            .iter()
            .map(|c| c.parse::<f64>())
            .collect::<Result<Vec<_>, _>>()?;
        Ok((cells[1].parse()?, figures))
    };
    let (validated, v) = inputs("validator")?;
    let (featured, f) = inputs("features")?;
    assert!(validated >= 3_000, "{out}");
    assert_eq!(featured, rows, "{out}");
    // decode and core take time in both stages.
    assert!(
        v[0] > 0.0 && v[1] > 0.0 && f[0] > 0.0 && f[1] > 0.0,
        "{out}"
    );
    Ok(())
}

/// Copies the first `rows` rows of a bundled file, optionally appending a
/// broken row.
fn sample(dir: &Path, file: &str, rows: usize, broken: bool) -> Result<()> {
    let text = std::fs::read_to_string(data_file(file))?;
    let mut lines: Vec<&str> = text.lines().take(rows + 1).collect();
    if broken {
        lines.push("2019-13-45T99:00:00Z,1,2,3,4,5");
    }
    std::fs::write(dir.join(file), lines.join("\n") + "\n")?;
    Ok(())
}

/// First and last bar time (epoch ms) of the first `rows` rows.
fn data_rows(file: &str, rows: usize) -> Result<(i64, i64)> {
    let text = std::fs::read_to_string(data_file(file))?;
    let ts: Vec<i64> = text
        .lines()
        .skip(1)
        .take(rows)
        .map(|l| {
            let cell = l.split(',').next().unwrap_or_default();
            chrono::DateTime::parse_from_rfc3339(cell)
                .map(|t| t.timestamp_millis())
                .context("ts")
        })
        .collect::<Result<_>>()?;
    Ok((ts[0], ts[ts.len() - 1]))
}

/// Mondays 00:00 New York strictly inside (first, last): each is fired by
/// the first bar after it.
fn mondays_after(first: i64, last: i64) -> u64 {
    use chrono::{Datelike, TimeZone};
    let ny = chrono_tz::America::New_York;
    let mut day = ny
        .timestamp_millis_opt(first)
        .single()
        .map(|t| t.date_naive())
        .unwrap_or_default();
    let mut n = 0;
    loop {
        day = day.succ_opt().unwrap_or(day);
        if day.weekday() != chrono::Weekday::Mon {
            continue;
        }
        let at = ny
            .from_local_datetime(&day.and_hms_opt(0, 0, 0).unwrap_or_default())
            .single()
            .map(|t| t.timestamp_millis())
            .unwrap_or(i64::MAX);
        if at >= last {
            return n;
        }
        n += 1;
    }
}

#[test]
fn demo_accounts_for_every_bar_and_row() -> Result<()> {
    let dir = tempfile::tempdir()?;
    sample(dir.path(), "bitfinex_BTCUSD_30m.csv", 3000, true)?;
    sample(dir.path(), "bitfinex_ETHUSD_30m.csv", 2000, false)?;
    // A weekly schedule (Mondays 00:00 New York) on the bars' time.
    let config = dir.path().join("autotrain.toml");
    std::fs::write(
        &config,
        "[[scheduler.schedule]]\nmodel_key = \"hmm/bitfinex:BTCUSD\"\ncron = \"0 0 * * 1\"\n\
         timezone = \"America/New_York\"\ninstruments = [\"bitfinex:BTCUSD\"]\nauto_promote = true\n",
    )?;
    let out = ok(&[
        "--config",
        config.to_str().unwrap_or_default(),
        "demo",
        "--json",
        "--data",
        dir.path().to_str().unwrap_or_default(),
    ])?;
    let summary: serde_json::Value = serde_json::from_str(out.trim())?;
    assert_eq!(summary["bars_in"], 5000);
    assert_eq!(summary["bad_rows"], 1);
    assert_eq!(summary["dead_letters"], 1);
    let field = |k: &str| summary[k].as_u64().unwrap_or(u64::MAX);
    assert_eq!(
        field("bars_passed") + field("bars_flagged") + field("duplicates"),
        5000,
        "{summary}"
    );
    assert!(field("bars_passed") > 4_900, "{summary}");
    assert_eq!(summary["flags"]["ohlc"], 0);
    // Every published bar got its feature row, downstream of the validator.
    assert_eq!(
        field("features_published"),
        field("bars_passed"),
        "{summary}"
    );
    assert_eq!(summary["feature_contract"], "1");
    assert!(field("training_triggers") < u64::MAX, "{summary}");
    // 3,000 BTC bars from 2017-10-01 (≈ 62 days) pass eight or nine
    // Mondays; the clock starts at the first bar (nothing before it is
    // caught up).
    let first = data_rows("bitfinex_BTCUSD_30m.csv", 3000)?;
    assert_eq!(
        field("scheduled_triggers"),
        mondays_after(first.0, first.1),
        "{summary}"
    );
    assert_eq!(
        summary["trainings_by_reason"]["schedule"], summary["scheduled_triggers"],
        "{summary}"
    );
    // Every trigger was trained, with or without a model; every model is a
    // registered version.
    assert_eq!(
        field("trainings"),
        field("training_triggers") + field("scheduled_triggers"),
        "{summary}"
    );
    assert_eq!(
        field("trainings_completed") + field("trainings_without_model"),
        field("trainings"),
        "{summary}"
    );
    assert_eq!(
        field("model_versions"),
        field("trainings_completed"),
        "{summary}"
    );
    assert!(field("promotions") <= field("model_versions"), "{summary}");
    for key in ["param_changes", "trades", "kill_switches"] {
        assert!(field(key) < u64::MAX, "{key}: {summary}");
    }
    assert!(summary["reward_policy"].is_number() && summary["reward_safe_preset"].is_number());
    Ok(())
}

#[test]
fn ops_tools_against_kafka() -> Result<()> {
    let b = shared_kafka();
    let prefix = format!("{}.", unique("cli"));
    let env_prefix = ("AUTOTRAIN__TOPIC_PREFIX", prefix.as_str());
    let run = |args: &[&str]| -> Result<Output> {
        Ok(Command::new(env!("CARGO_BIN_EXE_autotrain"))
            .args(args)
            .args(["--brokers", &b])
            .env(env_prefix.0, env_prefix.1)
            .env("AUTOTRAIN__REPLICATION_FACTOR", "1")
            .output()?)
    };
    let check = run(&["topics", "check"])?;
    assert!(!check.status.success(), "check fails before creation");
    assert!(String::from_utf8_lossy(&check.stdout).contains("missing"));

    let created = run(&["topics", "create"])?;
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&created.stdout)
            .matches("created")
            .count(),
        autotrain_topics::catalogue().topics.len()
    );
    let again = String::from_utf8(run(&["topics", "create"])?.stdout)?;
    assert_eq!(
        again.matches("exists").count(),
        autotrain_topics::catalogue().topics.len(),
        "create is idempotent"
    );

    let check = run(&["topics", "check"])?;
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let list = String::from_utf8(run(&["topics", "list"])?.stdout)?;
    assert!(
        list.contains(&format!("{prefix}model.updates\t4 partitions")),
        "{list}"
    );

    let dir = tempfile::tempdir()?;
    sample(dir.path(), "bitfinex_LTCUSD_30m.csv", 50, true)?;
    let produced = run(&[
        "produce",
        "--quiet",
        "--input",
        dir.path().to_str().unwrap_or_default(),
    ])?;
    assert!(
        produced.status.success(),
        "{}",
        String::from_utf8_lossy(&produced.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&produced.stdout)?;
    assert_eq!(
        (report["bars"].as_u64(), report["bad_rows"].as_u64()),
        (Some(50), Some(1))
    );

    let tail = String::from_utf8(run(&["tail", "market.bars.raw", "--max", "50"])?.stdout)?;
    let lines: Vec<serde_json::Value> = tail
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), 50);
    assert_eq!(lines[0]["schema"], "Bar");
    assert_eq!(lines[0]["value"]["symbol"], "LTCUSD");
    assert_eq!(lines[0]["key"], "bitfinex:LTCUSD");
    assert_eq!(lines[0]["event_id"].as_str().map(str::len), Some(32));

    let dlq = String::from_utf8(run(&["tail", "market.bars.dlq", "--max", "1"])?.stdout)?;
    let letter: serde_json::Value = serde_json::from_str(dlq.trim())?;
    assert_eq!(letter["value"]["error_kind"], "invalid");
    assert_eq!(
        letter["value"]["source_offset"], 52,
        "line of the broken row"
    );

    // A cluster where the registry's log is compacted would lose versions:
    // `topics check` says so and fails.
    let lossy = format!("{}.", unique("lossy"));
    let registry = format!("{lossy}model.updates");
    let out = Command::new(env!("CARGO_BIN_EXE_autotrain"))
        .args(["--brokers", &b, "topics", "create"])
        .env("AUTOTRAIN__TOPIC_PREFIX", &lossy)
        .output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(set_topic_configs(
            &b,
            &registry,
            &[("cleanup.policy", "compact"), ("retention.ms", "-1")],
        ))?;
    // The broker applies a config change asynchronously (KRaft metadata).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let check = loop {
        let check = Command::new(env!("CARGO_BIN_EXE_autotrain"))
            .args(["--brokers", &b, "topics", "check"])
            .env("AUTOTRAIN__TOPIC_PREFIX", &lossy)
            .output()?;
        if !check.status.success() || std::time::Instant::now() > deadline {
            break check;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    };
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(!check.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "{registry}: cleanup.policy = compact WOULD LOSE DATA"
        )),
        "{text}"
    );
    Ok(())
}

#[test]
fn validate_reports_the_real_gaps_of_the_btc_file() -> Result<()> {
    let file = data_file("bitfinex_BTCUSD_30m.csv");
    let out = ok(&[
        "validate",
        "--input",
        file.to_str().unwrap_or_default(),
        "--json",
    ])?;
    let report: serde_json::Value = serde_json::from_str(out.trim())?;
    assert_eq!(report["bars"], 35_019);
    assert_eq!(report["flags"]["gap"], 9);
    let missing: i64 = report["gaps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g["missing_bars"].as_i64())
        .sum();
    assert_eq!(missing, 22);
    let fx = data_file("dukascopy_EURUSD_1h_ask.csv");
    let fx = ok(&[
        "validate",
        "--input",
        fx.to_str().unwrap_or_default(),
        "--calendar",
        "fx",
        "--json",
    ])?;
    let fx: serde_json::Value = serde_json::from_str(fx.trim())?;
    assert_eq!(fx["bars"], 6_225);
    Ok(())
}

/// A reader that stops early (`| head`) ends a table-printing command
/// quietly: no panic, no error, killed by SIGPIPE like any Unix tool.
#[test]
fn a_table_piped_into_head_ends_quietly() -> Result<()> {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    // Hourly bars with every other hour missing: 10,000 gap lines in the
    // report, far more than a pipe holds.
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("gappy.csv");
    let mut csv = String::from("ts,open,high,low,close,volume\n");
    for i in 0..20_000i64 {
        csv.push_str(&format!("{},100,101,99,100,5\n", i * 2 * 3_600_000));
    }
    std::fs::write(&file, csv)?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_autotrain"))
        .args([
            "validate",
            "--input",
            file.to_str().unwrap_or_default(),
            "--instrument",
            "test:GAPPY",
            "--timeframe",
            "1h",
        ])
        .env("AUTOTRAIN__LOG__LEVEL", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    // Read the header and a few rows, then go away, as `head -3` does.
    let mut stdout = child.stdout.take().context("stdout")?;
    let mut first = [0u8; 512];
    let n = stdout.read(&mut first)?;
    ensure!(n > 0, "no output before the reader left");
    drop(stdout);
    let status = child.wait()?;
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .context("stderr")?
        .read_to_string(&mut stderr)?;
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
    assert!(
        status.success() || status.signal() == Some(13),
        "{status:?}: {stderr}"
    );
    Ok(())
}

/// Polls `probe` every 200 ms until it returns Some, for up to a minute.
fn eventually<T>(what: &str, mut probe: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = probe()? {
            return Ok(v);
        }
        ensure!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn the_review_queue_through_the_cli() -> Result<()> {
    use std::process::Stdio;

    let up = Up::start()?;
    let bootstrap = up.bootstrap.clone();
    let cmd = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_autotrain"));
        c.args(args)
            .args(["--brokers", &bootstrap])
            .env("AUTOTRAIN__LOG__LEVEL", "warn");
        c
    };
    let run = |args: &[&str]| -> Result<Output> { Ok(cmd(args).output()?) };
    let stdout = |args: &[&str]| -> Result<String> {
        let out = run(args)?;
        ensure!(
            out.status.success(),
            "autotrain {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    };

    let dir = tempfile::tempdir()?;
    let file = dir.path().join("test_JUMP_1h.csv");
    jumpy_csv(&file, 80, 60)?;
    stdout(&[
        "produce",
        "--quiet",
        "--input",
        file.to_str().unwrap_or_default(),
    ])?;
    let validator = cmd(&["run", "validator", "--group", &unique("cli-validator")])
        .stderr(Stdio::piped())
        .spawn()?;

    let pending: serde_json::Value = eventually("the held bar in the queue", || {
        let out = stdout(&["flags", "list", "--json"])?;
        Ok(out.lines().next().map(serde_json::from_str).transpose()?)
    })?;
    assert_eq!(pending["kind"], "anomaly");
    assert_eq!(pending["state"], "pending");
    let id = pending["flag_id"].as_str().unwrap_or_default().to_string();

    let approved = stdout(&[
        "flags",
        "approve",
        &id,
        "--actor",
        "ana",
        "--reason",
        "real move",
    ])?;
    let event: serde_json::Value = serde_json::from_str(approved.trim())?;
    assert_eq!(
        (event["state"].as_str(), event["actor"].as_str()),
        (Some("approved"), Some("ana"))
    );
    let twice = run(&["flags", "reject", &id])?;
    assert!(
        !twice.status.success(),
        "a decided flag takes no second decision"
    );
    assert!(String::from_utf8_lossy(&twice.stderr).contains("already decided"));

    // The validator publishes the held bar once approved.
    let released_ts = 1_600_000_000_000i64 + 60 * 3_600_000;
    eventually("the released bar on market.bars", || {
        let tail = stdout(&["tail", "market.bars"])?;
        Ok(tail
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["value"]["ts"].as_i64() == Some(released_ts))
            .map(|_| ()))
    })?;
    let decided = stdout(&["flags", "list", "--state", "decided", "--json"])?;
    assert_eq!(decided.lines().count(), 1, "{decided}");
    assert!(stdout(&["flags", "list", "--json"])?.trim().is_empty());

    Command::new("kill")
        .args(["-TERM", &validator.id().to_string()])
        .status()?;
    let out = validator.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("\"released\":1"), "{stderr}");
    drop(up);
    Ok(())
}

/// `autotrain up` in the background: a broker other processes reach.
struct Up {
    child: std::process::Child,
    bootstrap: String,
    /// Drains the rest of `up`'s output (a closed pipe would kill it).
    _drain: std::thread::JoinHandle<()>,
}

impl Up {
    fn start() -> Result<Self> {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(env!("CARGO_BIN_EXE_autotrain"))
            .arg("up")
            .env_remove("AUTOTRAIN_BROKERS")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let bootstrap = loop {
            let line = lines.next().transpose()?.context("`up` ended early")?;
            if let Some(b) = line.strip_prefix("bootstrap: ") {
                break b.to_string();
            }
        };
        let drain = std::thread::spawn(move || for _ in lines {});
        Ok(Up {
            child,
            bootstrap,
            _drain: drain,
        })
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A kill-switch the controller tripped, seen and reset by ops from the
/// CLI; the reset carries who and why, and a second one is refused.
#[test]
fn a_kill_switch_resumed_from_the_cli() -> Result<()> {
    use autotrain_schemas::{ParamUpdate, UpdateReason};

    let up = Up::start()?;
    let run = |args: &[&str]| -> Result<Output> {
        Ok(Command::new(env!("CARGO_BIN_EXE_autotrain"))
            .args(args)
            .args(["--brokers", &up.bootstrap])
            .env("AUTOTRAIN__LOG__LEVEL", "warn")
            .output()?)
    };
    let tripped = autotrain_integration_tests::cycle::kill_switch_tripped(
        "trend_following",
        "bitfinex:BTCUSD",
    );
    let settings = autotrain_kafka::ClientSettings::new(up.bootstrap.clone());
    tokio::runtime::Runtime::new()?.block_on(async {
        autotrain_integration_tests::publish(
            &settings,
            autotrain_topics::PARAM_UPDATES,
            &autotrain_params::update_key("trend_following", "bitfinex:BTCUSD"),
            &[tripped],
        )
        .await
    })?;
    let status = run(&["params", "status"])?;
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success() && text.contains("KILL-SWITCH HOLDS"),
        "{text}"
    );
    let resume = [
        "params",
        "resume",
        "trend_following",
        "bitfinex:BTCUSD",
        "--reason",
        "drawdown reviewed",
        "--actor",
        "alice",
    ];
    let out = run(&resume)?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manual: ParamUpdate = serde_json::from_slice(&out.stdout)?;
    assert_eq!(
        (
            manual.reason,
            manual.actor.as_deref(),
            manual.note.as_deref()
        ),
        (
            UpdateReason::Manual,
            Some("cli:alice"),
            Some("drawdown reviewed")
        )
    );
    let again = run(&resume)?;
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success() && err.contains("not held"), "{err}");
    Ok(())
}

#[test]
fn fetch_backfills_from_a_local_exchange_and_resumes_from_its_watermark() -> Result<()> {
    use autotrain_integration_tests::exchange::{ExchangeServer, Fault};
    let rt = tokio::runtime::Runtime::new()?;
    let data = autotrain_integration_tests::bars("bitfinex_ETHUSD_30m.csv", 1_200);
    let server = rt.block_on(ExchangeServer::start(data.clone()))?;
    server.push_faults(&[Fault::ServerError, Fault::RateLimited { retry_after_s: 1 }]);
    let up = Up::start()?;
    let to = data[1_000].ts.to_string();
    let fetch = |to: &str| -> Result<serde_json::Value> {
        let out = Command::new(env!("CARGO_BIN_EXE_autotrain"))
            .args([
                "fetch",
                "--api",
                "binance",
                "--base-url",
                &server.base_url(),
            ])
            .args(["--symbol", "ETHUSDT", "--timeframe", "30m"])
            .args(["--from", "2017-10-01T00:00:00Z", "--to", to])
            .args(["--brokers", &up.bootstrap])
            .output()?;
        ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    let first = fetch(&to)?;
    assert_eq!(first["stream"], "binance:ETHUSDT:30m");
    assert_eq!(first["bars_published"], 1_000);
    let again = fetch(&to)?;
    assert_eq!(again["bars_published"], 0, "{again}");
    assert_eq!(again["resumed_from"], first["next_ts"]);
    let more = fetch(&(data[1_199].ts + 1_800_000).to_string())?;
    assert_eq!(more["bars_published"], 200);
    drop(up);
    drop(server);
    Ok(())
}

#[test]
fn produce_resumes_from_the_stream_watermark() -> Result<()> {
    let up = Up::start()?;
    let dir = tempfile::tempdir()?;
    let produce = || -> Result<serde_json::Value> {
        let out = Command::new(env!("CARGO_BIN_EXE_autotrain"))
            .args(["produce", "--quiet", "--input"])
            .arg(dir.path())
            .args(["--brokers", &up.bootstrap])
            .output()?;
        ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    sample(dir.path(), "bitfinex_XRPUSD_30m.csv", 300, false)?;
    let first = produce()?;
    assert_eq!(
        (first["bars"].as_u64(), first["skipped"].as_u64()),
        (Some(300), Some(0))
    );
    let again = produce()?;
    assert_eq!(
        (again["bars"].as_u64(), again["skipped"].as_u64()),
        (Some(0), Some(300))
    );
    // The file grows: only the new rows go out.
    sample(dir.path(), "bitfinex_XRPUSD_30m.csv", 420, false)?;
    let grown = produce()?;
    assert_eq!(
        (grown["bars"].as_u64(), grown["skipped"].as_u64()),
        (Some(120), Some(300))
    );
    Ok(())
}

#[test]
fn generated_files_are_deterministic_and_validate_cleanly() -> Result<()> {
    let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    for dir in [&a, &b] {
        ok(&[
            "generate",
            "--instruments",
            "2",
            "--bars",
            "2000",
            "--timeframe",
            "5m",
            "--seed",
            "9",
            "--output",
            dir.path().to_str().unwrap_or_default(),
        ])?;
    }
    let name = "synthetic_SYN001_5m.csv";
    let text = std::fs::read(a.path().join(name))?;
    assert_eq!(
        text,
        std::fs::read(b.path().join(name))?,
        "same seed, same bytes"
    );
    assert_eq!(String::from_utf8(text)?.lines().count(), 2001);
    let report: serde_json::Value = serde_json::from_str(&ok(&[
        "validate",
        "--json",
        "--input",
        a.path().join(name).to_str().unwrap_or_default(),
    ])?)?;
    assert_eq!(report["bars"], 2000);
    assert_eq!(report["flags"]["ohlc"], 0);
    assert_eq!(report["flags"]["gap"], 0);
    Ok(())
}

/// The offline feature table of two real files agrees with pandas
/// (`tests/interop/features_pandas.py`, the contract's definitions written
/// with `ewm`/`rolling`), cell for cell.
/// Runs a pandas check from `tests/interop/`; fails with what it printed.
fn pandas_agrees(script: &str, args: &[&std::ffi::OsStr]) -> Result<()> {
    let path = autotrain_integration_tests::repo_root()
        .join("tests/interop")
        .join(script);
    let check = Command::new("python3").arg(path).args(args).output()?;
    ensure!(
        check.status.success(),
        "{script} {args:?}: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    Ok(())
}

#[test]
fn features_and_their_windows_agree_with_pandas_on_real_files() -> Result<()> {
    let dir = tempfile::tempdir()?;
    for file in ["bitfinex_BTCUSD_30m.csv", "dukascopy_EURUSD_1h_ask.csv"] {
        let out = dir.path().join(format!("{file}.features.csv"));
        let input = data_file(file);
        ok(&[
            "features",
            "--input",
            input.to_str().unwrap_or_default(),
            "--output",
            out.to_str().unwrap_or_default(),
        ])?;
        pandas_agrees("features_pandas.py", &[input.as_os_str(), out.as_os_str()])?;
    }
    // Training-window statistics (differential dataflow) against pandas.
    let out = dir.path().join("btc.csv");
    ok(&[
        "features",
        "--input",
        data_file("bitfinex_BTCUSD_30m.csv")
            .to_str()
            .unwrap_or_default(),
        "--output",
        out.to_str().unwrap_or_default(),
        "--window-days",
        "30",
    ])?;
    let window = dir.path().join("btc.csv.window.csv");
    pandas_agrees(
        "window_pandas.py",
        &[out.as_os_str(), window.as_os_str(), "30".as_ref()],
    )?;
    let checked = ok(&["features", "--check"])?;
    assert!(checked.contains("contract version 1 ok"), "{checked}");
    Ok(())
}

#[test]
fn training_through_the_cli() -> Result<()> {
    use std::process::Stdio;

    let up = Up::start()?;
    let bootstrap = up.bootstrap.clone();
    let store = tempfile::tempdir()?;
    let store_dir = store.path().display().to_string();
    let cmd = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_autotrain"));
        c.args(args)
            .args(["--brokers", &bootstrap])
            .env("AUTOTRAIN__LOG__LEVEL", "warn")
            .env("AUTOTRAIN__TRAINER__STORE_DIR", &store_dir)
            // The sample has real gaps and held anomalies; nobody decides
            // them in this test.
            .env("AUTOTRAIN__TRAINER__BLOCK_ON", "[]")
            .env("AUTOTRAIN__TRAINER__RECHECK_MS", "200")
            // A rollback must beat prod by 1 on its reference set: the
            // one below is refused unless forced.
            .env("AUTOTRAIN__TRAINER__GUARDRAILS__ROLLBACK_TOLERANCE", "-1");
        c
    };
    let stdout = |args: &[&str]| -> Result<String> {
        let out = cmd(args).output()?;
        ensure!(
            out.status.success(),
            "autotrain {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    };
    let fails = |args: &[&str]| -> Result<String> {
        let out = cmd(args).output()?;
        ensure!(!out.status.success(), "autotrain {args:?} should fail");
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    };

    let dir = tempfile::tempdir()?;
    sample(dir.path(), "bitfinex_BTCUSD_30m.csv", 3_000, false)?;
    stdout(&[
        "produce",
        "--quiet",
        "--input",
        dir.path().to_str().unwrap_or_default(),
    ])?;
    let mut services = Vec::new();
    for (what, group) in [
        ("validator", "cli-v"),
        ("features", "cli-f"),
        ("trainer", "cli-t"),
    ] {
        services.push(
            cmd(&["run", what, "--group", &unique(group)])
                .stderr(Stdio::null())
                .spawn()?,
        );
    }
    // Features of (nearly) every bar before training.
    eventually("features", || {
        let out = stdout(&["tail", "features", "--max", "2900"])?;
        Ok((out.lines().count() >= 2_900).then_some(()))
    })?;

    let key = "hmm/bitfinex:BTCUSD";
    let train = |seed: &str| -> Result<serde_json::Value> {
        let out = stdout(&[
            "train",
            "--model-key",
            key,
            "--instrument",
            "bitfinex:BTCUSD",
            "--seed",
            seed,
            "--param",
            "train_window=2500",
            "--timeout-s",
            "120",
            "--json",
        ])?;
        Ok(serde_json::from_str(&out)?)
    };
    let first = train("1")?;
    assert_eq!(first["state"], "completed", "{first}");
    assert_eq!(first["model_version"], 1);
    let second = train("2")?;
    assert_eq!(second["model_version"], 2);
    let listed = stdout(&["trainings", "list", "--json"])?;
    assert_eq!(listed.lines().count(), 2);

    let promoted = stdout(&["models", "promote", key, "--version", "2", "--actor", "ops"])?;
    assert!(promoted.contains("prod → v2"), "{promoted}");
    // Rollback: the plan (re-scored here) says it would be refused; so
    // does the trainer, until forced with a reason.
    let planned = stdout(&["models", "rollback", key, "--version", "1", "--plan"])?;
    assert!(
        planned.contains("prod v2 → v1") && planned.contains("would be refused"),
        "{planned}"
    );
    let rollback = ["models", "rollback", key, "--version", "1"];
    let refused = fails(&rollback)?;
    assert!(refused.contains("not verified"), "{refused}");
    let unexplained = fails(&[&rollback[..], &["--force"]].concat())?;
    assert!(unexplained.contains("needs a --reason"), "{unexplained}");
    let rolled = stdout(&[&rollback[..], &["--force", "--reason", "test"]].concat())?;
    assert!(
        rolled.contains("prod → v1") && rolled.contains("re-scored"),
        "{rolled}"
    );
    let refused = fails(&["models", "rollback", key, "--version", "2"])?;
    assert!(refused.contains("not older than prod"), "{refused}");
    let refused = fails(&["models", "promote", key, "--version", "1"])?;
    assert!(refused.contains("v1 is prod already"), "{refused}");
    let shown: serde_json::Value = serde_json::from_str(&stdout(&["models", "show", key])?)?;
    assert_eq!(shown["aliases"]["prod"], 1);
    assert_eq!(shown["versions"].as_array().map(Vec::len), Some(2));

    let id = first["training_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let rerun = stdout(&["trainings", "rerun", &id, "--timeout-s", "120"])?;
    assert!(
        rerun.contains(&format!("parameter hash matches {id}")),
        "{rerun}"
    );
    let refused = fails(&["trainings", "cancel", &id])?;
    assert!(refused.contains("cannot cancel"), "{refused}");
    let shown: serde_json::Value = serde_json::from_str(&stdout(&["trainings", "show", &id])?)?;
    assert!(
        shown["events"].as_array().is_some_and(|e| e.len() >= 3),
        "{shown}"
    );

    for mut s in services {
        let _ = s.kill();
        let _ = s.wait();
    }
    drop(up);
    Ok(())
}

/// One HTTP/1.1 request over a plain socket: (status, body).
fn http(addr: &str, method: &str, path: &str, token: Option<&str>) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status line")?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Ok((status, body))
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_accepts_the_token_that_token_made_and_refuses_others() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let made = ok(&[
        "token",
        "--name",
        "ci",
        "--scopes",
        "ml:read,ml:train",
        "--tenant",
        "desk-a",
    ])?;
    let secret = made
        .lines()
        .find_map(|l| l.strip_prefix("# at_"))
        .map(|t| format!("at_{t}"))
        .context("token printed")?;
    let entry: String = made
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!entry.contains(&secret), "the config holds only the hash");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let config = dir.path().join("autotrain.toml");
    std::fs::write(&config, format!("[api]\nbind = \"{addr}\"\n\n{entry}\n"))?;
    let config = config.to_str().unwrap_or_default();

    // Refusals before serving: dev mode off loopback, no tokens.
    let bad = autotrain(&["--config", config, "serve", "--dev", "--bind", "0.0.0.0:0"])?;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("loopback"));
    let none = autotrain(&["serve", "--bind", "127.0.0.1:0"])?;
    assert!(String::from_utf8_lossy(&none.stderr).contains("no tokens"));

    let _server = Killed(
        Command::new(env!("CARGO_BIN_EXE_autotrain"))
            .args(["--config", config, "serve"])
            .env_remove("AUTOTRAIN_BROKERS")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?,
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !matches!(http(&addr, "GET", "/health", None), Ok((200, _))) {
        ensure!(
            std::time::Instant::now() < deadline,
            "serve never became healthy"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (status, body) = http(&addr, "GET", "/api/trainings", None)?;
    assert_eq!(status, 401, "{body}");
    let (status, body) = http(&addr, "GET", "/api/trainings", Some("at_wrong"))?;
    assert_eq!(status, 401, "{body}");
    let (status, body) = http(&addr, "GET", "/api/trainings", Some(&secret))?;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"total\":0"), "{body}");
    let (status, body) = http(&addr, "POST", "/api/models/hmm/x:A/promote", Some(&secret))?;
    assert_eq!(status, 403, "no ml:write: {body}");
    let (status, body) = http(&addr, "GET", "/openapi.json", None)?;
    assert_eq!(status, 200);
    assert!(body.contains("\"/api/trainings/{id}/rerun\""), "{body}");
    Ok(())
}
