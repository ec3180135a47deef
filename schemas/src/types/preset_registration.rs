use serde::{Deserialize, Serialize};

use crate::payload::payload;

/// A preset registered at run time (`schemas/preset_registration.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresetRegistration {
    pub strategy: String,
    pub instrument: String,
    pub preset_id: String,
    pub params: Vec<PresetValue>,
    pub tenant: Option<String>,
    pub actor: String,
    pub at: i64,
}

/// One parameter value of a registered preset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresetValue {
    pub name: String,
    pub value: f64,
}

payload!(
    PresetRegistration,
    "PresetRegistration",
    "preset_registration.avsc"
);
