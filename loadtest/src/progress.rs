//! Progress bars on stderr, only when stderr is a terminal (so logs and `--json` pipes stay
//! clean).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar, or nothing when stderr is not a terminal.
pub struct Progress(Option<ProgressBar>);

impl Progress {
    /// A bar counting `total` items (connections).
    pub fn count(total: u64, label: &str) -> Progress {
        Progress::new(total, label, "{prefix:>10} [{bar:40}] {pos}/{len} {msg}")
    }

    /// A bar over `total_ms` milliseconds (a timed phase).
    pub fn timed(total_ms: u64, label: &str) -> Progress {
        Progress::new(
            total_ms,
            label,
            "{prefix:>10} [{bar:40}] {elapsed_precise} {msg}",
        )
    }

    fn new(total: u64, label: &str, template: &str) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = ProgressBar::new(total);
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(label.to_string());
        Progress(Some(bar))
    }

    pub fn set(&self, pos: u64, msg: String) {
        if let Some(bar) = &self.0 {
            bar.set_position(pos);
            bar.set_message(msg);
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish();
        }
    }
}
