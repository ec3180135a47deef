//! `FeatureBuild` manifests: what a materialised feature table was built
//! from, so it can be audited and rebuilt. The build id is a hash of the
//! manifest's content (same inputs and output ⇒ same id).

use autotrain_schemas::{BuildKind, FeatureBuild, InputRange};
use sha2::{Digest, Sha256};

use crate::contract::Contract;

#[derive(Debug)]
pub struct BuildInput<'a> {
    pub kind: BuildKind,
    pub source: String,
    pub inputs: Vec<InputRange>,
    pub as_of: Option<i64>,
    pub rows: i64,
    pub output_sha256: Option<String>,
    pub built_at: i64,
    pub contract: &'a Contract,
}

pub fn manifest(b: BuildInput<'_>) -> FeatureBuild {
    let contract_hash = b.contract.definition_hash();
    let mut h = Sha256::new();
    h.update(format!("{:?}", b.kind));
    h.update(&contract_hash);
    h.update(&b.source);
    for r in &b.inputs {
        h.update(format!(
            "{}/{}/{}-{}",
            r.topic, r.partition, r.first_offset, r.next_offset
        ));
    }
    h.update(format!("{:?}/{}/{:?}", b.as_of, b.rows, b.output_sha256));
    FeatureBuild {
        build_id: format!("fb-{}", &hex::encode(h.finalize())[..16]),
        kind: b.kind,
        contract_version: b.contract.version.clone(),
        contract_hash,
        source: b.source,
        inputs: b.inputs,
        as_of: b.as_of,
        rows: b.rows,
        output_sha256: b.output_sha256,
        built_at: b.built_at,
    }
}

/// SHA-256 (hex) of a written table.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
