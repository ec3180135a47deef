//! Strategy schemas (`strategy_schemas/*.yaml`): a strategy's parameters
//! with bounds, its presets (one marked safe), and the context features its
//! policy sees, each with the centre and scale that bring it near unit
//! size. Presets registered at run time are checked against the bounds.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("{path}: {why}")]
    File { path: String, why: String },
    #[error("strategy {strategy}: {why}")]
    Invalid { strategy: String, why: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    pub name: String,
    pub min: f64,
    pub max: f64,
    #[serde(default)]
    pub integer: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    pub id: String,
    #[serde(default)]
    pub safe: bool,
    pub values: BTreeMap<String, f64>,
}

/// A context feature named `forecast:<target>` (e.g.
/// `forecast:abs_return:1`) is the prediction on `forecasts` for the
/// decision's bar with that target; any other name is a feature of the
/// bar's vector.
pub const FORECAST_PREFIX: &str = "forecast:";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextFeature {
    pub name: String,
    pub center: f64,
    pub scale: f64,
}

impl ContextFeature {
    /// The forecast target this feature reads, if it is a forecast.
    pub fn forecast_target(&self) -> Option<&str> {
        self.name.strip_prefix(FORECAST_PREFIX)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrategySchema {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub params: Vec<ParamSpec>,
    pub presets: Vec<Preset>,
    #[serde(default)]
    pub context_features: Vec<ContextFeature>,
}

impl StrategySchema {
    /// Whether a context feature of this strategy is a forecast.
    pub fn uses_forecasts(&self) -> bool {
        self.context_features
            .iter()
            .any(|f| f.forecast_target().is_some())
    }

    pub fn from_yaml(text: &str) -> Result<Self, String> {
        let s: StrategySchema = serde_norway::from_str(text).map_err(|e| e.to_string())?;
        s.check().map_err(|e| e.to_string())?;
        Ok(s)
    }

    /// Every file of a folder ending in `.yaml`, sorted by strategy name.
    pub fn load_dir(dir: &Path) -> Result<Vec<StrategySchema>, SchemaError> {
        let file_err = |why: String| SchemaError::File {
            path: dir.display().to_string(),
            why,
        };
        let mut out = Vec::new();
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| file_err(e.to_string()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        entries.sort();
        for path in entries {
            let text = std::fs::read_to_string(&path).map_err(|e| SchemaError::File {
                path: path.display().to_string(),
                why: e.to_string(),
            })?;
            out.push(
                StrategySchema::from_yaml(&text).map_err(|why| SchemaError::File {
                    path: path.display().to_string(),
                    why,
                })?,
            );
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn invalid(&self, why: String) -> SchemaError {
        SchemaError::Invalid {
            strategy: self.name.clone(),
            why,
        }
    }

    /// Bounds make sense, every preset is valid, exactly one is safe.
    pub fn check(&self) -> Result<(), SchemaError> {
        for p in &self.params {
            if !(p.min.is_finite() && p.max.is_finite() && p.min <= p.max) {
                return Err(
                    self.invalid(format!("parameter {}: bounds {}..{}", p.name, p.min, p.max))
                );
            }
        }
        if self.presets.is_empty() {
            return Err(self.invalid("no presets".into()));
        }
        let safe = self.presets.iter().filter(|p| p.safe).count();
        if safe != 1 {
            return Err(self.invalid(format!("{safe} safe presets; exactly one is needed")));
        }
        let mut ids: Vec<&str> = self.presets.iter().map(|p| p.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != self.presets.len() {
            return Err(self.invalid("preset ids repeat".into()));
        }
        for p in &self.presets {
            self.check_preset(p).map_err(|why| self.invalid(why))?;
        }
        for f in &self.context_features {
            if !(f.scale.is_finite() && f.scale > 0.0 && f.center.is_finite()) {
                return Err(self.invalid(format!("context feature {}: scale must be > 0", f.name)));
            }
            if f.forecast_target().is_some_and(str::is_empty) {
                return Err(self.invalid(format!(
                    "context feature {}: name the forecast's target, e.g. forecast:abs_return:1",
                    f.name
                )));
            }
        }
        Ok(())
    }

    /// A preset is within bounds and sets exactly the schema's parameters.
    pub fn check_preset(&self, p: &Preset) -> Result<(), String> {
        for spec in &self.params {
            let v = p
                .values
                .get(&spec.name)
                .ok_or_else(|| format!("preset {}: no value for {}", p.id, spec.name))?;
            if !v.is_finite() || *v < spec.min || *v > spec.max {
                return Err(format!(
                    "preset {}: {} = {v} outside {}..{}",
                    p.id, spec.name, spec.min, spec.max
                ));
            }
            if spec.integer && v.fract() != 0.0 {
                return Err(format!(
                    "preset {}: {} = {v} is not an integer",
                    p.id, spec.name
                ));
            }
        }
        if let Some(extra) = p
            .values
            .keys()
            .find(|k| !self.params.iter().any(|s| &s.name == *k))
        {
            return Err(format!("preset {}: unknown parameter {extra}", p.id));
        }
        Ok(())
    }

    pub fn safe_preset(&self) -> usize {
        self.presets.iter().position(|p| p.safe).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_schemas_load_and_bad_presets_are_refused_with_the_reason() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../strategy_schemas");
        let all = StrategySchema::load_dir(&dir).expect("bundled schemas");
        let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["market_making", "momentum_breakout", "trend_following"]
        );
        let m = &all[1];
        assert_eq!(m.presets[m.safe_preset()].id, "safe");
        let mut bad = m.presets[0].clone();
        bad.values.insert("entry_z".into(), 9.0);
        assert!(m.check_preset(&bad).unwrap_err().contains("outside"));
        bad.values.insert("entry_z".into(), 1.0);
        bad.values.insert("lookback".into(), 10.5);
        assert!(m.check_preset(&bad).unwrap_err().contains("integer"));
        bad.values.insert("lookback".into(), 10.0);
        bad.values.insert("leverage".into(), 2.0);
        assert!(m.check_preset(&bad).unwrap_err().contains("unknown"));
        let two_safe = "name: x\nparams: []\npresets:\n  - { id: a, safe: true, values: {} }\n  - { id: b, safe: true, values: {} }\n";
        assert!(StrategySchema::from_yaml(two_safe)
            .unwrap_err()
            .contains("safe"));
    }
}
