//! One typed handle per catalogue topic.

use autotrain_schemas::*;

use crate::handle::Topic;

pub const MARKET_BARS_RAW: Topic<Bar> = Topic::new("market.bars.raw");
pub const MARKET_BARS: Topic<Bar> = Topic::new("market.bars");
pub const MARKET_FLAGS: Topic<ValidationFlag> = Topic::new("market.flags");
pub const MARKET_BARS_DLQ: Topic<DeadLetter> = Topic::new("market.bars.dlq");
pub const FEATURES: Topic<FeatureVector> = Topic::new("features");
pub const REGIMES: Topic<RegimePosterior> = Topic::new("regimes");
pub const FORECASTS: Topic<Forecast> = Topic::new("forecasts");
pub const TRAINING_TRIGGERS: Topic<TrainingTrigger> = Topic::new("training.triggers");
pub const TRAINING_STATUS: Topic<TrainingStatus> = Topic::new("training.status");
pub const MODEL_UPDATES: Topic<ModelVersion> = Topic::new("model.updates");
pub const PARAM_UPDATES: Topic<ParamUpdate> = Topic::new("param.updates");
pub const TRADE_OUTCOMES: Topic<TradeOutcome> = Topic::new("trade.outcomes");
pub const PARAM_PRESETS: Topic<PresetRegistration> = Topic::new("param.presets");
pub const SOURCE_WATERMARKS: Topic<SourceWatermark> = Topic::new("source.watermarks");
pub const FEATURE_BUILDS: Topic<FeatureBuild> = Topic::new("features.builds");
pub const TRAINING_COMMANDS: Topic<TrainingCommand> = Topic::new("training.commands");
pub const TRAINING_CLAIMS: Topic<DataClaim> = Topic::new("training.claims");

/// Every handle as (name, payload name), for the catalogue test.
pub fn all_handles() -> Vec<(&'static str, &'static str)> {
    fn h<T: Payload>(t: Topic<T>) -> (&'static str, &'static str) {
        (t.name(), T::NAME)
    }
    vec![
        h(MARKET_BARS_RAW),
        h(MARKET_BARS),
        h(MARKET_FLAGS),
        h(MARKET_BARS_DLQ),
        h(FEATURES),
        h(REGIMES),
        h(FORECASTS),
        h(TRAINING_TRIGGERS),
        h(TRAINING_STATUS),
        h(MODEL_UPDATES),
        h(PARAM_UPDATES),
        h(TRADE_OUTCOMES),
        h(PARAM_PRESETS),
        h(SOURCE_WATERMARKS),
        h(FEATURE_BUILDS),
        h(TRAINING_COMMANDS),
        h(TRAINING_CLAIMS),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::{catalogue, Catalogue, CatalogueError, CleanupPolicy};

    #[test]
    fn handles_and_catalogue_agree() {
        let mut from_handles = all_handles();
        from_handles.sort();
        let mut from_file: Vec<(&str, &str)> = catalogue()
            .topics
            .iter()
            .map(|t| (t.name.as_str(), t.value.as_str()))
            .collect();
        from_file.sort();
        assert_eq!(from_handles, from_file);
    }

    #[test]
    fn restored_topics_are_kept_whole() {
        for name in [
            "market.bars.raw",
            "market.flags",
            "features",
            "model.updates",
            "param.updates",
            "training.status",
            "training.claims",
        ] {
            let t = catalogue().get(name).expect(name);
            assert!(t.event_log, "{name}");
            assert_eq!(t.cleanup_policy, CleanupPolicy::Delete, "{name}");
            assert_eq!(t.retention_ms, -1, "{name}");
        }
        assert_eq!(
            catalogue().dead_letter_for("market.bars.raw"),
            Some("market.bars.dlq")
        );
    }

    #[test]
    fn bad_catalogues_are_rejected() {
        let entry = |name: &str, value: &str, extra: &str| {
            format!(
                "[[topic]]\nname = \"{name}\"\nkey = \"k\"\nvalue = \"{value}\"\npartitions = 1\ncleanup_policy = \"delete\"\nretention_ms = -1\ndescription = \"\"\n{extra}\n"
            )
        };
        let dup = format!("{}{}", entry("a", "Bar", ""), entry("a", "Bar", ""));
        assert!(matches!(
            Catalogue::parse(&dup),
            Err(CatalogueError::Duplicate(_))
        ));
        assert!(matches!(
            Catalogue::parse(&entry("a", "Nope", "")),
            Err(CatalogueError::UnknownPayload { .. })
        ));
        assert!(matches!(
            Catalogue::parse(&entry("a", "Bar", "dead_letter = \"a\"")),
            Err(CatalogueError::BadDeadLetter { .. })
        ));
        assert!(matches!(
            Catalogue::parse(&entry("a", "Bar", "colour = \"red\"")),
            Err(CatalogueError::Parse(_))
        ));
        let compacted_log =
            entry("a", "Bar", "event_log = true").replace("\"delete\"", "\"compact\"");
        assert!(matches!(
            Catalogue::parse(&compacted_log),
            Err(CatalogueError::LossyEventLog(_))
        ));
        let expiring_log = entry("a", "Bar", "event_log = true")
            .replace("retention_ms = -1", "retention_ms = 1000");
        assert!(matches!(
            Catalogue::parse(&expiring_log),
            Err(CatalogueError::LossyEventLog(_))
        ));
    }
}
