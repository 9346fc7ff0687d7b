//! Reports: what a run leaves behind for the people and tools after it.
//!
//! Everything is written from one [`RunResult`], so the reports never
//! disagree with each other:
//!
//! - [`summary_table`]: plain text on stdout at the end of `shakedown run`.
//! - `journal.json` ([`journal`]): the result itself, for tools; it reads
//!   back into the same value.
//! - `junit.xml` ([`junit`]): SLOs, the verdict and the faults as test
//!   cases, for CI.
//! - `report.md` ([`markdown`]) and `report.html` ([`html`]): the
//!   recovery validation report for a postmortem.
//! - [`prom`] and [`push`]: the final figures as Prometheus metrics, pushed
//!   to a Pushgateway.
//!
//! Files are written to `name.tmp` and renamed into place, so a CI job that
//! picks them up never reads half a file.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::experiment::result::RunResult;

mod chart;
mod escape;
mod format;
pub mod html;
pub mod journal;
pub mod junit;
pub mod markdown;
pub mod prom;
pub mod push;
mod rows;
mod table;

#[cfg(test)]
pub(crate) mod fixtures;

/// The report files, in the order [`write_all`] writes and returns them.
pub const FILES: [&str; 4] = ["journal.json", "junit.xml", "report.md", "report.html"];

/// The summary printed on stdout at the end of a run: the verdict, one row
/// per SLO and phase, per-source deltas, recovery and faults.
pub fn summary_table(r: &RunResult) -> String {
    table::summary(r)
}

/// Writes `contents` to `path` through `path.tmp` and a rename, so a
/// reader sees the old file or the whole new one, never a part.
fn write_atomic(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()
    })();
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(std::io::Error::new(
            e.kind(),
            format!("{}: {e}", path.display()),
        ));
    }
    Ok(())
}

/// Creates `dir` (and its parents) and writes `journal.json`, `junit.xml`,
/// `report.md` and `report.html` into it; returns their paths in that order.
pub fn write_all(r: &RunResult, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let journal = journal::text(r).map_err(std::io::Error::other)?;
    let contents = [journal, junit::text(r), markdown::text(r), html::text(r)];
    let mut paths = Vec::with_capacity(FILES.len());
    for (name, text) in FILES.iter().zip(contents) {
        let path = dir.join(name);
        write_atomic(&path, &text)?;
        paths.push(path);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("shakedown-report-{}-{tag}", std::process::id()))
    }

    #[test]
    fn writes_every_file_in_order() {
        let root = scratch("all");
        let dir = root.join("nested/reports");
        let r = fixtures::violated();
        let paths = write_all(&r, &dir).expect("write");
        let names: Vec<String> = paths
            .iter()
            .map(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(names, FILES);
        let journal = std::fs::read_to_string(&paths[0]).expect("journal");
        assert_eq!(journal::parse(&journal).expect("parse"), r);
        let junit = std::fs::read_to_string(&paths[1]).expect("junit");
        assert_eq!(junit, junit::text(&r));
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .expect("list")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "no .tmp left behind");
        // A second run replaces the files.
        let paths = write_all(&fixtures::passed(), &dir).expect("rewrite");
        let junit = std::fs::read_to_string(&paths[1]).expect("junit");
        assert!(junit.contains("failures=\"0\""));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn an_unwritable_dir_is_an_error() {
        let root = scratch("blocked");
        std::fs::create_dir_all(&root).expect("mkdir");
        let file = root.join("not-a-dir");
        std::fs::write(&file, "x").expect("write");
        assert!(write_all(&fixtures::passed(), &file.join("reports")).is_err());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn summary_is_the_table() {
        let s = summary_table(&fixtures::passed());
        assert!(s.contains("VERDICT: PASSED (exit 0)"));
    }
}
