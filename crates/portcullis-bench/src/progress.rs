//! The live progress line (indicatif): elapsed time against the plan, and the last second's
//! rate, errors and p99. Drawn on stderr only when it is a terminal, so CI logs stay clean.

use std::{io::IsTerminal, time::Duration};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::{duration::format_latency, report::Sample};

/// The progress line of one run.
#[derive(Debug)]
pub(crate) struct Progress {
    bar: ProgressBar,
    /// Progress counts requests (`-n`) rather than seconds.
    by_requests: bool,
}

impl Progress {
    /// A line for a run of `planned` length (or `requests` requests when set); hidden unless
    /// `enabled` and stderr is a terminal.
    pub(crate) fn new(enabled: bool, planned: Duration, requests: Option<u64>) -> Self {
        let target = if enabled && std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let (len, unit) = match requests {
            Some(n) => (n, " requests"),
            None => (planned.as_secs().max(1), "s"),
        };
        let bar = ProgressBar::with_draw_target(Some(len), target);
        let template = format!("{{elapsed_precise}} [{{bar:24}}] {{pos}}/{{len}}{unit}  {{msg}}");
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("=> "));
        }
        Self {
            bar,
            by_requests: requests.is_some(),
        }
    }

    /// Shows the latest interval.
    pub(crate) fn update(
        &self,
        elapsed: Duration,
        sample: &Sample,
        total_requests: u64,
        total_errors: u64,
    ) {
        self.bar.set_position(if self.by_requests {
            total_requests
        } else {
            elapsed.as_secs()
        });
        let rate = sample.requests as f64 / sample.span_s.max(1e-9);
        self.bar.set_message(format!(
            "{rate:.0} req/s  errors {total_errors}  p99 {}",
            format_latency(Duration::from_secs_f64(sample.p99_ms / 1e3))
        ));
    }

    /// Removes the line.
    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
