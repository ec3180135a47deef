use serde::{Deserialize, Serialize};

use crate::payload::payload;

/// Features of one instrument at one bar (`schemas/feature_vector.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureVector {
    pub instrument: String,
    pub timeframe: String,
    pub ts: i64,
    pub contract_version: String,
    pub bar_revision: i32,
    pub values: Vec<FeatureValue>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureValue {
    pub name: String,
    pub value: Option<f64>,
}

payload!(FeatureVector, "FeatureVector", "feature_vector.avsc");
