//! The topology, declared once: each processor's inputs, outputs, state
//! restore and time semantics ([`Stage::wiring`]), and how its core is
//! built from the configuration ([`Build`]). `run`, `demo`, `replay` and
//! the API's lag view take their topic lists and cores from here, so a
//! processor cannot read one set of topics in the demo and another in
//! production, nor be built one way in a run and another in its replay.

use std::collections::{BTreeSet, HashMap};

use anyhow::Result;
use autotrain_drift::{DriftProcessor, Schedule};
use autotrain_features::{Contract, FeaturesProcessor};
use autotrain_forecast::ForecastProcessor;
use autotrain_kafka::{read_topic, values, ClientSettings};
use autotrain_params::{Controller, Engine, EngineProcessor, ParamsProcessor, StrategySchema};
use autotrain_regime::RegimeProcessor;

/// The forecast processor's model key per instrument, by default.
pub const FORECAST_MODEL_KEY: &str = "gbdt/{instrument}";
use autotrain_schemas::{ModelVersion, RegimePosterior};
use autotrain_topics::{
    FEATURES, MARKET_BARS, MARKET_BARS_DLQ, MARKET_FLAGS, MODEL_UPDATES, PARAM_UPDATES, REGIMES,
    TRADE_OUTCOMES, TRAINING_CLAIMS, TRAINING_STATUS, TRAINING_TRIGGERS,
};
use autotrain_trainer::core::TrainerConfig;
use autotrain_validator::{Calendar, ValidatorProcessor};

use crate::config::Config;

/// How long a restore waits for a topic read.
const RESTORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The processors of the pipeline, in the order bars flow through them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Validator,
    Features,
    Drift,
    Trainer,
    Regime,
    Forecast,
    Params,
    Engine,
}

/// How a processor gets its state back after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Restore {
    /// The runner replays `[log start, committed)` of its inputs through
    /// the core (the state is a function of what it consumed).
    Inputs,
    /// The core reads these topics (what it published, and the control
    /// topics) up to its group's committed offsets before consuming.
    Topics(&'static [&'static str]),
}

/// Which time a processor decides in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Time {
    /// One data input, processed in partition order.
    Single,
    /// Several inputs merged in event time; the control topics' progress
    /// records say how far each is complete (`docs/determinism.md`).
    Aligned { control: &'static [&'static str] },
    /// Data in partition order; the control topic's events take effect at
    /// their event time (`effective_from`) when they carry one, else on
    /// arrival: no writer vouches for the keys it reads (a forecast model
    /// is trained by ops, not by the data), so waiting could last for ever.
    Arrival { control: &'static [&'static str] },
}

/// One processor's declaration.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Wiring {
    pub stage: Stage,
    /// Consumed in its consumer group.
    pub inputs: &'static [&'static str],
    /// Read outside the group (the trainer reads `features` up to each
    /// run's event time).
    pub reads: &'static [&'static str],
    pub outputs: &'static [&'static str],
    /// Outputs whose content is a function of the inputs (what `replay`
    /// and `digest` compare); the rest say what happened when (a run's
    /// status while it waited for data, a claim's wall-clock lease).
    pub decisions: &'static [&'static str],
    pub restore: Restore,
    pub time: Time,
}

/// Topic lists of the declarations below (constants, so they live for
/// the program).
const VALIDATOR_OUT: &[&str] = &[
    MARKET_BARS.name(),
    MARKET_FLAGS.name(),
    MARKET_BARS_DLQ.name(),
];
const BARS_AND_FLAGS: &[&str] = &[MARKET_BARS.name(), MARKET_FLAGS.name()];
const FEATURES_ONLY: &[&str] = &[FEATURES.name()];
const TRIGGERS: &[&str] = &[TRAINING_TRIGGERS.name()];
const MODELS: &[&str] = &[MODEL_UPDATES.name()];
const TRAINER_OUT: &[&str] = &[
    MODEL_UPDATES.name(),
    autotrain_topics::FEATURE_BUILDS.name(),
    TRAINING_STATUS.name(),
    TRAINING_CLAIMS.name(),
];
const REGIMES_ONLY: &[&str] = &[REGIMES.name()];
const FORECASTS_ONLY: &[&str] = &[autotrain_topics::FORECASTS.name()];
const PARAMS_OUT: &[&str] = &[PARAM_UPDATES.name()];
const OUTCOMES: &[&str] = &[TRADE_OUTCOMES.name()];
const TRAINER_RESTORE: &[&str] = &[
    MODEL_UPDATES.name(),
    TRAINING_STATUS.name(),
    TRAINING_TRIGGERS.name(),
];
const REGIME_RESTORE: &[&str] = &[MODEL_UPDATES.name(), REGIMES.name()];
const PARAMS_RESTORE: &[&str] = &[
    autotrain_topics::PARAM_PRESETS.name(),
    PARAM_UPDATES.name(),
    TRADE_OUTCOMES.name(),
    REGIMES.name(),
    autotrain_topics::FORECASTS.name(),
];

impl Stage {
    pub const ALL: [Stage; 8] = [
        Stage::Validator,
        Stage::Features,
        Stage::Drift,
        Stage::Trainer,
        Stage::Regime,
        Stage::Forecast,
        Stage::Params,
        Stage::Engine,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Validator => "validator",
            Stage::Features => "features",
            Stage::Drift => "drift",
            Stage::Trainer => "trainer",
            Stage::Regime => "regime",
            Stage::Forecast => "forecast",
            Stage::Params => "params",
            Stage::Engine => "engine",
        }
    }

    pub fn wiring(self) -> Wiring {
        const NONE: &[&str] = &[];
        match self {
            Stage::Validator => Wiring {
                stage: self,
                inputs: autotrain_validator::processor::INPUTS,
                reads: NONE,
                outputs: VALIDATOR_OUT,
                decisions: BARS_AND_FLAGS,
                restore: Restore::Inputs,
                time: Time::Single,
            },
            Stage::Features => Wiring {
                stage: self,
                inputs: autotrain_features::processor::INPUTS,
                reads: NONE,
                outputs: FEATURES_ONLY,
                decisions: FEATURES_ONLY,
                restore: Restore::Inputs,
                time: Time::Single,
            },
            Stage::Drift => Wiring {
                stage: self,
                inputs: autotrain_drift::processor::INPUTS,
                reads: NONE,
                outputs: TRIGGERS,
                decisions: TRIGGERS,
                restore: Restore::Inputs,
                time: Time::Aligned { control: MODELS },
            },
            Stage::Trainer => Wiring {
                stage: self,
                inputs: autotrain_trainer::service::INPUTS,
                reads: FEATURES_ONLY,
                outputs: TRAINER_OUT,
                decisions: MODELS,
                restore: Restore::Topics(TRAINER_RESTORE),
                time: Time::Aligned { control: TRIGGERS },
            },
            Stage::Regime => Wiring {
                stage: self,
                inputs: autotrain_regime::processor::INPUTS,
                reads: NONE,
                outputs: REGIMES_ONLY,
                decisions: REGIMES_ONLY,
                restore: Restore::Topics(REGIME_RESTORE),
                time: Time::Aligned { control: MODELS },
            },
            Stage::Forecast => Wiring {
                stage: self,
                inputs: autotrain_forecast::processor::INPUTS,
                reads: NONE,
                outputs: FORECASTS_ONLY,
                decisions: FORECASTS_ONLY,
                restore: Restore::Topics(MODELS),
                time: Time::Arrival { control: MODELS },
            },
            Stage::Params => Wiring {
                stage: self,
                inputs: autotrain_params::processor::INPUTS,
                reads: NONE,
                outputs: PARAMS_OUT,
                decisions: PARAMS_OUT,
                restore: Restore::Topics(PARAMS_RESTORE),
                time: Time::Aligned { control: OUTCOMES },
            },
            Stage::Engine => Wiring {
                stage: self,
                inputs: autotrain_params::processor::ENGINE_INPUTS,
                reads: NONE,
                outputs: OUTCOMES,
                decisions: OUTCOMES,
                restore: Restore::Inputs,
                time: Time::Aligned {
                    control: PARAMS_OUT,
                },
            },
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything the cores are built from: the configuration plus what a
/// deployment's entry point adds to it (`run`'s flags, the demo's
/// settings). A replay builds its cores with the same [`Build`] as the run
/// that wrote the log.
#[derive(Debug, Clone)]
pub struct Build {
    pub align_event_time: bool,
    /// Calendar per instrument (`exchange:SYMBOL`); others are 24x7.
    pub calendars: HashMap<String, Calendar>,
    pub drift: autotrain_drift::DriftConfig,
    /// Schedules on the bars' time, run inside the drift processor.
    pub event_schedules: Vec<Schedule>,
    pub trainer: TrainerConfig,
    /// Model key per instrument the regime processor follows.
    pub regime_model_key: String,
    /// Model key per instrument the forecast processor follows.
    pub forecast_model_key: String,
    pub params: autotrain_params::ParamsConfig,
    pub strategies: Vec<StrategySchema>,
    /// The simulated engine's cost per unit of position, basis points.
    pub cost_bps: f64,
}

/// The engine's cost when no flag says otherwise (`run engine --cost-bps`).
pub const DEFAULT_COST_BPS: f64 = 2.0;

impl Build {
    /// What `autotrain run …` builds from the configuration alone.
    pub fn deployment(config: &Config) -> Result<Self> {
        Ok(Build {
            align_event_time: config.runner.align_event_time,
            calendars: config
                .validator
                .calendars
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            drift: config.drift.clone(),
            event_schedules: config.scheduler.event_schedules(),
            trainer: config.trainer.clone(),
            regime_model_key: config.drift.model_key.clone(),
            forecast_model_key: FORECAST_MODEL_KEY.to_string(),
            params: config.params.clone(),
            strategies: StrategySchema::load_dir(&crate::config::schemas_dir(config))?,
            cost_bps: DEFAULT_COST_BPS,
        })
    }

    /// What `autotrain demo` builds over bars of `instruments`: no one
    /// answers flags, so they do not block trainings (the guardrails still
    /// count critical ones); without `[[scheduler.schedule]]`, a quarterly
    /// schedule per instrument on the bars' time; no trading calendars.
    pub fn demo(config: &Config, instruments: &BTreeSet<String>) -> Result<Self> {
        let mut build = Build::deployment(config)?;
        build.calendars.clear();
        build.trainer.block_on.clear();
        build.event_schedules = if config.scheduler.schedule.is_empty() {
            instruments
                .iter()
                .map(|instrument| Schedule {
                    model_key: config.drift.model_key.replace("{instrument}", instrument),
                    tenant: None,
                    cron: "0 0 1 */3 *".into(),
                    timezone: "UTC".into(),
                    instruments: vec![instrument.clone()],
                    hyperparams: Vec::new(),
                    auto_promote: true,
                })
                .collect()
        } else {
            config.scheduler.schedule.clone()
        };
        Ok(build)
    }

    pub fn validator(&self) -> ValidatorProcessor {
        ValidatorProcessor::new(self.calendars.clone())
    }

    pub fn features(&self) -> Result<FeaturesProcessor> {
        Ok(FeaturesProcessor::new(Contract::bundled()?))
    }

    pub fn drift(&self) -> Result<DriftProcessor> {
        Ok(DriftProcessor::new(self.drift.clone())
            .aligned(self.align_event_time)
            .with_event_schedules(self.event_schedules.clone())?)
    }

    pub fn regime(&self) -> RegimeProcessor {
        RegimeProcessor::new(&self.regime_model_key).aligned(self.align_event_time)
    }

    pub fn forecast(&self) -> ForecastProcessor {
        // Not aligned: see [`Time::Arrival`].
        ForecastProcessor::new(&self.forecast_model_key)
    }

    /// The forecast core with the registry's events read back
    /// ([`Restore::Topics`]): a forecast depends on its bar and the model.
    pub async fn forecast_restored(&self, settings: &ClientSettings) -> Result<ForecastProcessor> {
        let settings = settings.clone();
        let models = tokio::task::spawn_blocking(move || {
            read_topic::<ModelVersion>(&settings, MODEL_UPDATES.name(), RESTORE_TIMEOUT)
        })
        .await??;
        let mut core = self.forecast();
        core.restore(values(MODEL_UPDATES.name(), models)?)
            .map_err(|e| anyhow::anyhow!("restoring: {e}"))?;
        Ok(core)
    }

    /// The regime core with the registry's events and each instrument's
    /// newest posterior read back ([`Restore::Topics`]).
    pub async fn regime_restored(&self, settings: &ClientSettings) -> Result<RegimeProcessor> {
        let settings = settings.clone();
        let (models, regimes) = tokio::task::spawn_blocking(move || {
            Ok::<_, autotrain_kafka::KafkaError>((
                read_topic::<ModelVersion>(&settings, MODEL_UPDATES.name(), RESTORE_TIMEOUT)?,
                read_topic::<RegimePosterior>(&settings, REGIMES.name(), RESTORE_TIMEOUT)?,
            ))
        })
        .await??;
        let mut latest = std::collections::BTreeMap::new();
        for p in values(REGIMES.name(), regimes)? {
            latest.insert((p.instrument.clone(), p.timeframe.clone()), p);
        }
        let mut core = self.regime();
        core.restore(values(MODEL_UPDATES.name(), models)?, latest.into_values())
            .map_err(|e| anyhow::anyhow!("restoring: {e}"))?;
        Ok(core)
    }

    /// The controller with its presets, the updates in force and the
    /// outcomes its committed decisions had learnt read back up to `group`'s
    /// committed offsets ([`Restore::Topics`]).
    pub async fn params_restored(
        &self,
        settings: &ClientSettings,
        group: &str,
    ) -> Result<ParamsProcessor> {
        let (settings, group) = (settings.clone(), group.to_string());
        let state = tokio::task::spawn_blocking(move || {
            autotrain_params::processor::load_state(&settings, &group, RESTORE_TIMEOUT)
        })
        .await??;
        let mut core = self.params();
        core.restore(state);
        Ok(core)
    }

    pub fn params(&self) -> ParamsProcessor {
        ParamsProcessor::new(Controller::new(
            self.params.clone(),
            self.strategies.clone(),
        ))
        .aligned(self.align_event_time)
    }

    pub fn engine(&self) -> EngineProcessor {
        EngineProcessor::new(Engine::new(
            autotrain_params::controlled(self.strategies.clone(), &self.params),
            self.cost_bps,
        ))
        .aligned(self.align_event_time)
    }
}
