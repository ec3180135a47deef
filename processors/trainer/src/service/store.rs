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

    /// The stored sets: hash and when the file was written (epoch ms).
    /// An absent store is empty.
    pub fn list(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let io = |source| StoreError::Io {
            path: self.dir.clone(),
            source,
        };
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(hash) = name.strip_suffix(".json").filter(|h| !h.starts_with('.')) else {
                continue;
            };
            let written = entry
                .metadata()
                .and_then(|m| m.modified())
                .map_err(io)?
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            out.push((hash.to_string(), written));
        }
        out.sort();
        Ok(out)
    }

    /// Deletes the sets `retention` lets go at `now`: none that `needed`
    /// names. Returns the hashes deleted.
    pub fn sweep(
        &self,
        retention: &crate::retention::Retention,
        needed: &std::collections::HashSet<String>,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        let stored = self.list()?;
        let mut deleted = Vec::new();
        for hash in retention.unneeded_references(&stored, needed, now) {
            let path = self.path(hash);
            std::fs::remove_file(&path).map_err(|source| StoreError::Io { path, source })?;
            deleted.push(hash.to_string());
        }
        Ok(deleted)
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

    #[test]
    fn the_sweep_deletes_only_old_unneeded_sets() {
        let dir = tempfile_dir("sweep");
        let store = ReferenceStore::new(&dir);
        let a = store.save(&Table::default()).expect("save");
        std::fs::write(dir.join(format!("{}.json", "f".repeat(64))), b"x").expect("write");
        std::fs::write(dir.join(".partial.tmp"), b"x").expect("write");
        let listed = store.list().expect("list");
        assert_eq!(listed.len(), 2, "{listed:?}");
        let later = listed[0].1 + 31 * 86_400_000;
        let needed = [a.clone()].into_iter().collect();
        let deleted = store
            .sweep(&crate::retention::Retention::default(), &needed, later)
            .expect("sweep");
        assert_eq!(deleted, vec!["f".repeat(64)]);
        assert!(store.load(&a).is_ok());
        assert!(ReferenceStore::new(dir.join("absent"))
            .list()
            .expect("empty")
            .is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("autotrain-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }
}
