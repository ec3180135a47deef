//! Fully populated and minimal samples of every payload, shared by the tests.

use autotrain_schemas::*;

pub fn bar() -> Bar {
    Bar {
        exchange: "bitfinex".into(),
        symbol: "BTCUSD".into(),
        timeframe: "30m".into(),
        ts: 1_506_816_000_000,
        open: 4367.1,
        high: 4387.5,
        low: 4365.0,
        close: 4386.3,
        volume: 755.5217587,
        source: "data/bitfinex_BTCUSD_30m.csv".into(),
        checksum: Some("ab".repeat(32)),
        revision: 2,
    }
}

/// One payload type's samples: its name, the samples as generic Avro values
/// (for shape checks), and one round-trip check per sample.
pub type Samples = (&'static str, Vec<apache_avro::types::Value>, Checks);

/// Samples of every payload type (full and minimal where fields are
/// optional), so one loop covers all types.
pub fn all() -> Vec<Samples> {
    vec![
        entry(vec![
            bar(),
            Bar {
                checksum: None,
                revision: 0,
                ..bar()
            },
        ]),
        entry(vec![
            ValidationFlag {
                flag_id: "gap-1".into(),
                instrument: "bitfinex:BTCUSD".into(),
                timeframe: "30m".into(),
                kind: FlagKind::Gap,
                severity: Severity::Error,
                ts: 1_546_830_000_000,
                gap_start: Some(1_546_822_800_000),
                gap_end: Some(1_546_830_000_000),
                missing_bars: Some(3),
                detail: "3 bars missing".into(),
                state: HitlState::Overridden,
                actor: Some("ops@desk".into()),
                decided_at: Some(1_546_900_000_000),
            },
            ValidationFlag {
                flag_id: "stale-1".into(),
                instrument: "bitfinex:BTCUSD".into(),
                timeframe: "30m".into(),
                kind: FlagKind::Stale,
                severity: Severity::Warning,
                ts: 1,
                gap_start: None,
                gap_end: None,
                missing_bars: None,
                detail: String::new(),
                state: HitlState::Open,
                actor: None,
                decided_at: None,
            },
        ]),
        entry(vec![
            DeadLetter {
                processor: "validator".into(),
                source_topic: "market.bars.raw".into(),
                source_partition: 3,
                source_offset: 12345,
                key: Some(b"bitfinex:BTCUSD".to_vec()),
                payload: Some(vec![0, 1, 2, 255]),
                error_kind: ErrorKind::UnknownSchema,
                error: "unknown writer schema fingerprint".into(),
                source_timestamp: Some(1_700_000_000_000),
            },
            DeadLetter {
                processor: "validator".into(),
                source_topic: "market.bars.raw".into(),
                source_partition: 0,
                source_offset: 0,
                key: None,
                payload: None,
                error_kind: ErrorKind::Processing,
                error: String::new(),
                source_timestamp: None,
            },
        ]),
        entry(vec![FeatureVector {
            instrument: "bitfinex:BTCUSD".into(),
            timeframe: "30m".into(),
            ts: 1_506_816_000_000,
            contract_version: "1".into(),
            bar_revision: 1,
            values: vec![
                FeatureValue {
                    name: "lr".into(),
                    value: Some(0.0012),
                },
                FeatureValue {
                    name: "rsi_14".into(),
                    value: None,
                },
            ],
        }]),
        entry(vec![RegimePosterior {
            instrument: "bitfinex:BTCUSD".into(),
            timeframe: "30m".into(),
            ts: 1_506_816_000_000,
            model_key: "hmm-btc".into(),
            model_version: 4,
            probabilities: vec![0.1, 0.7, 0.2],
            regime: 1,
            loglik: -3.25,
            features: vec![FeatureValue {
                name: "rvol_20".into(),
                value: Some(0.41),
            }],
        }]),
        entry(vec![Forecast {
            instrument: "bitfinex:BTCUSD".into(),
            timeframe: "30m".into(),
            ts: 1_506_816_000_000,
            model_key: "gbdt/bitfinex:BTCUSD".into(),
            model_version: 2,
            target: "abs_return:1".into(),
            prediction: 0.0041,
        }]),
        entry(vec![
            TrainingTrigger {
                trigger_id: "t-1".into(),
                model_key: "hmm-btc".into(),
                tenant: Some("desk-a".into()),
                reason: TriggerReason::Drift,
                instruments: vec!["bitfinex:BTCUSD".into()],
                dataset_version: Some("2019-10".into()),
                feature_contract_version: Some("1".into()),
                hyperparams: vec![Param {
                    name: "states".into(),
                    value: "3".into(),
                }],
                seed: 42,
                priority: Priority::Urgent,
                auto_promote: true,
                evidence: Some(DriftEvidence {
                    detector: "adwin".into(),
                    instrument: "bitfinex:BTCUSD".into(),
                    feature: "lr".into(),
                    statistic: 0.31,
                    threshold: 0.002,
                    window: 200,
                }),
                rerun_of: Some("tr-0".into()),
                created_at: 1_700_000_000_000,
                revealed_at: Some(1_700_000_001_000),
            },
            TrainingTrigger {
                trigger_id: "t-2".into(),
                model_key: "hmm-btc".into(),
                tenant: None,
                reason: TriggerReason::Schedule,
                instruments: vec![],
                dataset_version: None,
                feature_contract_version: None,
                hyperparams: vec![],
                seed: 0,
                priority: Priority::Low,
                auto_promote: false,
                evidence: None,
                rerun_of: None,
                created_at: 0,
                revealed_at: None,
            },
        ]),
        entry(vec![TrainingStatus {
            training_id: "tr-1".into(),
            model_key: "hmm-btc".into(),
            state: TrainingState::WaitingData,
            stage: Some("fit".into()),
            progress: 0.5,
            message: "restart 2/4".into(),
            metrics: vec![Metric {
                name: "loglik".into(),
                value: -1.5,
            }],
            error: None,
            attempt: 2,
            model_version: Some(3),
            at: 1_700_000_000_000,
        }]),
        entry(vec![model_version()]),
        entry(vec![ParamUpdate {
            strategy: "momentum_breakout".into(),
            instrument: "bitfinex:BTCUSD".into(),
            config_id: "cfg-1".into(),
            preset_id: "safe".into(),
            params: vec![ParamValue {
                name: "lookback".into(),
                value: 20.0,
            }],
            model_key: None,
            model_version: None,
            reason: UpdateReason::KillSwitch,
            effective_for: Effective::NewPositions,
            context: vec![1.0, 0.2, 0.8],
            at: 1_700_000_000_000,
            actor: None,
            note: None,
        }]),
        entry(vec![TradeOutcome {
            trade_id: "trade-1".into(),
            strategy: "momentum_breakout".into(),
            instrument: "bitfinex:BTCUSD".into(),
            config_id: "cfg-1".into(),
            preset_id: "safe".into(),
            reward: -0.25,
            context: vec![0.2, 0.8],
            ts: 1_700_000_000_000,
            baseline_reward: None,
            flat: false,
        }]),
        entry(vec![
            SourceWatermark {
                stream: "binance:BTCUSDT:30m".into(),
                next_ts: 1_700_000_000_000,
                bars: 1_000,
                chunks: 2,
                last_chunk_sha256: Some("cd".repeat(32)),
                source: "binance klines http://127.0.0.1:9/".into(),
            },
            SourceWatermark {
                stream: "file:BTCUSD:30m".into(),
                next_ts: 0,
                bars: 0,
                chunks: 0,
                last_chunk_sha256: None,
                source: "file".into(),
            },
        ]),
        entry(vec![
            FeatureBuild {
                build_id: "build-1".into(),
                kind: BuildKind::TrainingSet,
                contract_version: "1".into(),
                contract_hash: "ef".repeat(32),
                source: "bitfinex:BTCUSD 2018-01-01..2019-01-01".into(),
                inputs: vec![InputRange {
                    topic: "features".into(),
                    partition: 3,
                    first_offset: 0,
                    next_offset: 17_520,
                }],
                as_of: Some(1_700_000_000_000),
                rows: 17_520,
                output_sha256: Some("01".repeat(32)),
                built_at: 1_700_000_000_001,
            },
            FeatureBuild {
                build_id: "build-2".into(),
                kind: BuildKind::File,
                contract_version: "1".into(),
                contract_hash: "ef".repeat(32),
                source: "data/x.csv".into(),
                inputs: vec![],
                as_of: None,
                rows: 0,
                output_sha256: None,
                built_at: 0,
            },
        ]),
        entry(vec![
            TrainingCommand {
                command_id: "cmd-1".into(),
                action: CommandAction::Rollback,
                training_id: None,
                model_key: Some("hmm/bitfinex:BTCUSD".into()),
                version: Some(2),
                tenant: Some("desk-a".into()),
                actor: "ops@desk".into(),
                reason: "v3 underperforms".into(),
                at: 1_700_000_000_000,
                force: false,
            },
            TrainingCommand {
                command_id: "cmd-2".into(),
                action: CommandAction::Cancel,
                training_id: Some("tr-1".into()),
                model_key: None,
                version: None,
                tenant: None,
                actor: "cli".into(),
                reason: String::new(),
                at: 0,
                force: false,
            },
        ]),
        entry(vec![DataClaim {
            claim_id: "tr-1/1".into(),
            training_id: "tr-1".into(),
            model_key: "hmm/bitfinex:BTCUSD".into(),
            attempt: 1,
            mode: ClaimMode::Strict,
            state: ClaimState::Released,
            ranges: vec![OffsetRange {
                topic: "features".into(),
                partition: 2,
                start: 10,
                end: 500,
            }],
            reason: "attempt failed".into(),
            at: 1_700_000_000_000,
        }]),
        entry(vec![PresetRegistration {
            strategy: "market_making".into(),
            instrument: "bitfinex:BTCUSD".into(),
            preset_id: "mid".into(),
            params: vec![PresetValue {
                name: "size".into(),
                value: 0.5,
            }],
            tenant: Some("desk-a".into()),
            actor: "api:ops".into(),
            at: 1_700_000_000_000,
        }]),
    ]
}

pub type Checks = Vec<Box<dyn Fn() -> Result<(), String>>>;

fn entry<T: Payload>(values: Vec<T>) -> Samples {
    let generic = values
        .iter()
        .map(|v| apache_avro::to_value(v).expect("serde to Avro value"))
        .collect();
    let checks = values
        .into_iter()
        .map(|v| {
            Box::new(move || {
                let bytes = encode(&v).map_err(|e| e.to_string())?;
                let back: T = decode(&bytes).map_err(|e| e.to_string())?;
                if back != v {
                    return Err(format!(
                        "{} round trip changed the value: {v:?} -> {back:?}",
                        T::NAME
                    ));
                }
                Ok(())
            }) as Box<dyn Fn() -> Result<(), String>>
        })
        .collect();
    (T::NAME, generic, checks)
}

/// A registry event with a full manifest.
pub fn model_version() -> ModelVersion {
    ModelVersion {
        model_key: "hmm-btc".into(),
        version: 3,
        event: RegistryEvent::AliasMoved,
        training_id: Some("tr-1".into()),
        parameters: Some(vec![1, 2, 3]),
        artifact_hash: None,
        parameter_hash: "cd".repeat(32),
        metrics: vec![Metric {
            name: "sharpe".into(),
            value: 1.2,
        }],
        tags: vec!["hmm".into()],
        manifest: Some(Manifest {
            trigger_id: "t-1".into(),
            code_version: "0.1.0".into(),
            feature_contract_version: "1".into(),
            inputs: vec![OffsetRange {
                topic: "features".into(),
                partition: 0,
                start: 0,
                end: 100,
            }],
            split_version: "s1".into(),
            reference_hash: "ef".repeat(32),
            hyperparams: vec![Param {
                name: "states".into(),
                value: "3".into(),
            }],
            seed: 7,
            dataset_version: Some("2019-10".into()),
            code_commit: Some("0123abc".into()),
            feature_contract_hash: Some("c2".repeat(32)),
            feature_build: Some("fb-0123456789abcdef".into()),
        }),
        alias: Some("prod".into()),
        previous_version: Some(2),
        at: 1_700_000_000_000,
        effective_from: Some(1_699_999_000_000),
    }
}
