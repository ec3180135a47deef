//! [`TrainedModel`]: what a `ModelVersion` carries in `parameters`: the
//! feature columns a model reads and its HMM, as JSON (floats round-trip
//! exactly), so any consumer — the regime processor, an audit script —
//! can load it.

use serde::{Deserialize, Serialize};

use crate::hmm::GaussianHmm;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainedModel {
    /// Feature names, in the HMM's column order.
    pub columns: Vec<String>,
    pub hmm: GaussianHmm,
}

impl TrainedModel {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}
