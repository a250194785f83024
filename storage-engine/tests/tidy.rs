//! Architecture rules checked, not hoped for: every Rust source file starts with a `//!` comment
//! saying what it owns, only `runtime.rs` names glommio, and the engine does not depend on the
//! crates above it.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        // `vendor` holds third-party code kept as published (storage-engine/vendor).
        if path.is_dir() && !path.ends_with("target") && !path.ends_with("vendor") {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_source_file_says_what_it_owns() {
    let mut files = Vec::new();
    for krate in [
        "storage-engine",
        "tools",
        "bench",
        "rpc",
        "schema",
        "coordinator",
        "fuzz",
    ] {
        sources(&workspace().join(krate), &mut files);
    }
    assert!(files.len() > 20);
    let missing: Vec<_> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            // Generated code (the Cap'n Proto bindings) says where it comes from instead.
            let generated = text.lines().take(5).any(|l| l.contains("@generated"));
            !generated && !text.trim_start().starts_with("//!")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "files without a //! header: {missing:?}"
    );
}

#[test]
fn only_the_runtime_module_names_glommio() {
    let mut files = Vec::new();
    for dir in [
        "storage-engine/src",
        "rpc/src",
        "tools/src",
        "coordinator/src",
    ] {
        sources(&workspace().join(dir), &mut files);
    }
    let offenders: Vec<_> = files
        .iter()
        .filter(|f| !f.ends_with("runtime.rs"))
        .filter(|f| std::fs::read_to_string(f).unwrap().contains("glommio::"))
        .collect();
    assert!(
        offenders.is_empty(),
        "glommio used outside runtime.rs: {offenders:?}"
    );
}

#[test]
fn the_engine_depends_on_no_crate_above_it() {
    let manifest = std::fs::read_to_string(workspace().join("storage-engine/Cargo.toml")).unwrap();
    for above in [
        "tessera-rpc",
        "tessera-coordinator",
        "tessera-tools",
        "tessera-bench",
        "tessera-schema",
    ] {
        assert!(
            !manifest.contains(above),
            "storage-engine depends on {above}"
        );
    }
}
