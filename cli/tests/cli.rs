//! The `autotrain` binary as a user runs it: help everywhere, the demo on
//! real files (with an unreadable row), and the ops tools against a real
//! Tansu broker: topics create/list/check, produce, tail.

use std::path::Path;
use std::process::{Command, Output};

use anyhow::{ensure, Result};
use autotrain_integration_tests::{data_file, unique, Tansu};

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
        "up", "topics", "produce", "tail", "demo", "validate", "bench",
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
    ] {
        ok(&[sub[0], sub[1], "--help"])?;
    }
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

#[test]
fn demo_accounts_for_every_bar_and_row() -> Result<()> {
    let dir = tempfile::tempdir()?;
    sample(dir.path(), "bitfinex_BTCUSD_30m.csv", 3000, true)?;
    sample(dir.path(), "bitfinex_ETHUSD_30m.csv", 2000, false)?;
    let out = ok(&[
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
    Ok(())
}

#[test]
fn ops_tools_against_tansu() -> Result<()> {
    let tansu = Tansu::start()?;
    let b = tansu.bootstrap();
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
        11
    );
    let again = String::from_utf8(run(&["topics", "create"])?.stdout)?;
    assert_eq!(again.matches("exists").count(), 11, "create is idempotent");

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
    drop(tansu);
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
