//! `gc`: remove blobs no tag reaches, optionally checking the rest.

use crate::error::Result;
use serde_json::json;

use crate::cli::GcArgs;
use crate::layout::Layout;
use crate::progress::human_bytes;
use crate::settings::Settings;

/// Run `gc`.
pub fn run(settings: &Settings, a: &GcArgs) -> Result<()> {
    let dir = a
        .layout
        .clone()
        .or_else(|| settings.file.build.layout.clone())
        .unwrap_or_else(|| "_build/image".into());
    let layout = Layout::open(&dir)?;
    if layout.is_being_written() {
        super::progress(settings).say(format!(
            "waiting for a build writing to {} to finish",
            dir.display()
        ));
    }
    let report = layout.gc()?;
    let fsck = if a.fsck {
        Some(layout.fsck(true)?)
    } else {
        None
    };
    if settings.json {
        super::print_json(
            &json!({"layout": dir, "removed": report.removed, "bytes_freed": report.bytes, "fsck": fsck}),
        );
    } else {
        crate::out!(
            "removed {} blobs ({}) from {}",
            report.removed.len(),
            human_bytes(report.bytes),
            dir.display()
        );
        if let Some(f) = &fsck {
            if f.problems.is_empty() {
                crate::out!("fsck: {} blobs checked, all well", f.blobs_checked);
            }
        }
    }
    if let Some(f) = fsck {
        if !f.problems.is_empty() {
            return Err(crate::error::Error::input(format!(
                "fsck of {}: {}",
                dir.display(),
                f.problems.join("; ")
            )));
        }
    }
    Ok(())
}
