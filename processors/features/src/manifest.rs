//! `FeatureBuild` manifests: what a materialised feature table was built
//! from, so it can be audited and rebuilt. The build id is a hash of what
//! was built: the contract, the source, as-of, rows and, when the table was
//! hashed, its hash; the input offsets only when it was not (the same table
//! read from another copy of the log is the same build).

use autotrain_schemas::{BuildKind, FeatureBuild, InputRange};
use sha2::{Digest, Sha256};

use crate::contract::Contract;

#[derive(Debug)]
pub struct BuildInput {
    pub kind: BuildKind,
    pub source: String,
    pub inputs: Vec<InputRange>,
    pub as_of: Option<i64>,
    pub rows: i64,
    pub output_sha256: Option<String>,
    pub built_at: i64,
    pub contract: ContractId,
}

/// Which contract a build used: its version and definition hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractId {
    pub version: String,
    pub hash: String,
}

impl From<&Contract> for ContractId {
    fn from(c: &Contract) -> Self {
        ContractId {
            version: c.version.clone(),
            hash: c.definition_hash(),
        }
    }
}

pub fn manifest(b: BuildInput) -> FeatureBuild {
    let mut h = Sha256::new();
    h.update(format!("{:?}", b.kind));
    h.update(&b.contract.hash);
    h.update(&b.source);
    if b.output_sha256.is_none() {
        for r in &b.inputs {
            h.update(format!(
                "{}/{}/{}-{}",
                r.topic, r.partition, r.first_offset, r.next_offset
            ));
        }
    }
    h.update(format!("{:?}/{}/{:?}", b.as_of, b.rows, b.output_sha256));
    FeatureBuild {
        build_id: format!("fb-{}", &hex::encode(h.finalize())[..16]),
        kind: b.kind,
        contract_version: b.contract.version,
        contract_hash: b.contract.hash,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn input(next_offset: i64, output: Option<&str>) -> BuildInput {
        BuildInput {
            kind: BuildKind::TrainingSet,
            source: "EX:A as of 10".into(),
            inputs: vec![InputRange {
                topic: "features".into(),
                partition: 0,
                first_offset: 0,
                next_offset,
            }],
            as_of: Some(10),
            rows: 5,
            output_sha256: output.map(str::to_string),
            built_at: next_offset,
            contract: ContractId {
                version: "1".into(),
                hash: "ab".into(),
            },
        }
    }

    #[test]
    fn a_hashed_table_is_the_same_build_whatever_offsets_it_was_read_at() {
        let a = manifest(input(100, Some("t1")));
        assert_eq!(a.build_id, manifest(input(250, Some("t1"))).build_id);
        assert_ne!(a.build_id, manifest(input(100, Some("t2"))).build_id);
        assert_ne!(
            manifest(input(100, None)).build_id,
            manifest(input(250, None)).build_id,
            "without a table hash the offsets identify the build"
        );
    }
}
