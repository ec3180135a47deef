//! Records the git commit of the build (with `-dirty` when the tree has
//! uncommitted changes) as `AUTOTRAIN_GIT_COMMIT`, for the manifest of every
//! model this trainer fits. Runs on every build (its `rerun-if-changed`
//! names no real file); the crate recompiles only when the value changes.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-changed=.git-commit-always-checked");
    let commit = git(&["rev-parse", "HEAD"]).map(|head| {
        let dirty =
            git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
        if dirty {
            format!("{head}-dirty")
        } else {
            head
        }
    });
    println!(
        "cargo:rustc-env=AUTOTRAIN_GIT_COMMIT={}",
        commit.unwrap_or_default()
    );
}
