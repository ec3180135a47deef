//! [`Contract`]: the versioned list of features (`contract.toml`) and the
//! check that a changed definition comes with a new version
//! (`contract.lock`).

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    LogReturn,
    Ema,
    RetMean,
    RetStd,
    Rsi,
    Rvol,
    VolumeZ,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feature {
    pub name: String,
    pub kind: Kind,
    #[serde(default)]
    pub window: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contract {
    pub version: String,
    #[serde(rename = "feature")]
    pub features: Vec<Feature>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContractError {
    #[error("contract does not parse: {0}")]
    Parse(String),
    #[error("feature {0:?} appears twice")]
    Duplicate(String),
    #[error("feature {name:?} ({kind:?}) needs a window of at least {min}")]
    Window {
        name: String,
        kind: Kind,
        min: usize,
    },
    #[error("contract version {version:?} changed without a version bump: contract.lock has {locked}, the definitions hash to {actual}; bump `version` and add it to contract.lock")]
    Drift {
        version: String,
        locked: String,
        actual: String,
    },
    #[error(
        "contract version {version:?} is not in contract.lock; add `\"{version}\" = \"{actual}\"`"
    )]
    Unlocked { version: String, actual: String },
}

const BUNDLED: &str = include_str!("../contract.toml");
const BUNDLED_LOCK: &str = include_str!("../contract.lock");

impl Contract {
    pub fn parse(text: &str) -> Result<Self, ContractError> {
        let c: Contract = toml::from_str(text).map_err(|e| ContractError::Parse(e.to_string()))?;
        let mut names = HashSet::new();
        for f in &c.features {
            if !names.insert(f.name.as_str()) {
                return Err(ContractError::Duplicate(f.name.clone()));
            }
            let min = match f.kind {
                Kind::LogReturn => 0,
                Kind::Ema | Kind::Rsi => 1,
                Kind::RetMean => 1,
                Kind::RetStd | Kind::Rvol | Kind::VolumeZ => 2,
            };
            if min > 0 && f.window.unwrap_or(0) < min {
                return Err(ContractError::Window {
                    name: f.name.clone(),
                    kind: f.kind,
                    min,
                });
            }
        }
        Ok(c)
    }

    /// The contract shipped with autotrain, checked against its lock.
    pub fn bundled() -> Result<Self, ContractError> {
        let c = Contract::parse(BUNDLED)?;
        c.check_lock(BUNDLED_LOCK)?;
        Ok(c)
    }

    /// SHA-256 of the feature definitions (names, kinds, windows, order).
    pub fn definition_hash(&self) -> String {
        let mut h = Sha256::new();
        for f in &self.features {
            h.update(f.name.as_bytes());
            h.update([0]);
            h.update(format!("{:?}", f.kind).as_bytes());
            h.update([0]);
            h.update(f.window.unwrap_or(0).to_le_bytes());
        }
        hex::encode(h.finalize())
    }

    /// Fails if this version is locked with other definitions, or not
    /// locked at all.
    pub fn check_lock(&self, lock: &str) -> Result<(), ContractError> {
        let locked: BTreeMap<String, String> = toml::from_str(lock)
            .map_err(|e| ContractError::Parse(format!("contract.lock: {e}")))?;
        let actual = self.definition_hash();
        match locked.get(&self.version) {
            Some(h) if *h == actual => Ok(()),
            Some(h) => Err(ContractError::Drift {
                version: self.version.clone(),
                locked: h.clone(),
                actual,
            }),
            None => Err(ContractError::Unlocked {
                version: self.version.clone(),
                actual,
            }),
        }
    }

    /// The hash `contract.lock` records for a released version (what a
    /// trainer that only sees a vector's `contract_version` links to).
    pub fn released_hash(version: &str) -> Option<String> {
        let locked: BTreeMap<String, String> = toml::from_str(BUNDLED_LOCK).ok()?;
        locked.get(version).cloned()
    }

    pub fn names(&self) -> Vec<&str> {
        self.features.iter().map(|f| f.name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_released_version_has_its_locked_hash() {
        let c = Contract::bundled().expect("bundled contract");
        assert_eq!(
            Contract::released_hash(&c.version),
            Some(c.definition_hash())
        );
        assert_eq!(Contract::released_hash("no such version"), None);
    }

    #[test]
    fn the_bundled_contract_is_locked() {
        let c = Contract::bundled().expect("bundled contract");
        assert_eq!(
            c.names(),
            [
                "lr",
                "ema_12",
                "ema_26",
                "ret_mean_20",
                "ret_std_20",
                "rsi_14",
                "rvol_20",
                "volume_z_20"
            ]
        );
    }

    #[test]
    fn a_changed_definition_without_a_bump_fails_the_check() {
        let mut c = Contract::parse(BUNDLED).expect("parses");
        c.features[1].window = Some(13);
        assert!(matches!(
            c.check_lock(BUNDLED_LOCK),
            Err(ContractError::Drift { .. })
        ));
        c.version = "2".into();
        assert!(matches!(
            c.check_lock(BUNDLED_LOCK),
            Err(ContractError::Unlocked { .. })
        ));
        let lock = format!("\"2\" = \"{}\"\n", c.definition_hash());
        assert_eq!(c.check_lock(&lock), Ok(()));
    }

    #[test]
    fn bad_contracts_are_refused() {
        let dup = "version = \"x\"\n[[feature]]\nname = \"a\"\nkind = \"log_return\"\n[[feature]]\nname = \"a\"\nkind = \"log_return\"\n";
        assert_eq!(
            Contract::parse(dup),
            Err(ContractError::Duplicate("a".into()))
        );
        let no_window = "version = \"x\"\n[[feature]]\nname = \"s\"\nkind = \"ret_std\"\n";
        assert!(matches!(
            Contract::parse(no_window),
            Err(ContractError::Window { .. })
        ));
        assert!(matches!(
            Contract::parse("version = 1"),
            Err(ContractError::Parse(_))
        ));
    }
}
