//! [`ReferenceStore`]: reference sets on disk, content-addressed
//! (`{dir}/{sha256}.json`). A set is written once (to a temporary file,
//! then renamed) and never overwritten; reading checks the hash, so a
//! manifest's `reference_hash` always names exactly the rows evaluated.

use std::path::{Path, PathBuf};

use crate::dataset::Table;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("reference store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reference set {0} is not in the store")]
    Missing(String),
    #[error("reference set {hash} is corrupt: {why}")]
    Corrupt { hash: String, why: String },
}

#[derive(Debug, Clone)]
pub struct ReferenceStore {
    dir: PathBuf,
}

impl ReferenceStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ReferenceStore { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, hash: &str) -> PathBuf {
        self.dir.join(format!("{hash}.json"))
    }

    /// Stores `table` under its hash (kept as is if already there).
    pub fn save(&self, table: &Table) -> Result<String, StoreError> {
        let hash = table.content_hash();
        let path = self.path(&hash);
        if path.exists() {
            return Ok(hash);
        }
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let tmp = self.dir.join(format!(".{hash}.tmp"));
        std::fs::write(&tmp, table.to_bytes()).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        Ok(hash)
    }

    pub fn load(&self, hash: &str) -> Result<Table, StoreError> {
        let path = self.path(hash);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::Missing(hash.into()))
            }
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        let table = Table::from_bytes(&bytes).map_err(|e| StoreError::Corrupt {
            hash: hash.into(),
            why: e.to_string(),
        })?;
        if table.content_hash() != hash {
            return Err(StoreError::Corrupt {
                hash: hash.into(),
                why: "content does not hash to its name".into(),
            });
        }
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Row;

    #[test]
    fn stored_once_read_back_and_checked() {
        let dir = std::env::temp_dir().join(format!("autotrain-store-{}", std::process::id()));
        let store = ReferenceStore::new(&dir);
        let t = Table {
            names: vec!["lr".into()],
            rows: vec![Row {
                instrument: "a".into(),
                ts: 1,
                values: vec![Some(0.1)],
            }],
        };
        let h = store.save(&t).expect("save");
        assert_eq!(store.save(&t).expect("again"), h);
        assert_eq!(store.load(&h).expect("load"), t);
        std::fs::write(dir.join(format!("{h}.json")), b"{\"names\":[],\"rows\":[]}")
            .expect("tamper");
        assert!(matches!(store.load(&h), Err(StoreError::Corrupt { .. })));
        assert!(matches!(store.load("00"), Err(StoreError::Missing(_))));
        let _ = std::fs::remove_dir_all(dir);
    }
}
