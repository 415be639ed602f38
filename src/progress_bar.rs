//! Progress on the terminal: an indicatif bar behind the libraries' `Progress` trait, with Ctrl-C
//! turned into a polite request to stop (the libraries save what they have and return).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use anyhow::Context;
use loupe_util::Progress;

/// Progress as an indicatif bar with tokens/s and ETA.
pub struct Bar {
    bar: Option<indicatif::ProgressBar>,
    stop: Arc<AtomicBool>,
    pub started: Instant,
    /// Units advanced in this run.
    pub tokens: u64,
}

impl Bar {
    /// A bar whose `should_stop` turns true at the first Ctrl-C. Every bar of the process shares
    /// one flag: the handler can be installed only once.
    pub fn stopping_on_ctrl_c() -> anyhow::Result<Self> {
        static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();
        let stop = match STOP.get() {
            Some(stop) => stop.clone(),
            None => {
                let stop = Arc::new(AtomicBool::new(false));
                let flag = stop.clone();
                ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
                    .context("cannot install the Ctrl-C handler")?;
                STOP.get_or_init(|| stop).clone()
            }
        };
        Ok(Bar {
            bar: None,
            stop,
            started: Instant::now(),
            tokens: 0,
        })
    }

    /// Whether Ctrl-C was pressed.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Shown after the counts (losses, L0).
    pub fn set_message(&self, message: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(message);
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Progress for Bar {
    fn start(&mut self, what: &str, total: u64, done: u64) {
        let bar = if total > 0 {
            indicatif::ProgressBar::new(total)
        } else {
            indicatif::ProgressBar::no_length()
        };
        let template = if total > 0 {
            "{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} tokens ({per_sec}, ETA {eta}) {msg}"
        } else {
            "{prefix} [{elapsed_precise}] {pos} tokens ({per_sec}) {msg}"
        };
        bar.set_style(indicatif::ProgressStyle::with_template(template).expect("a valid template"));
        bar.set_prefix(what.to_string());
        bar.set_position(done);
        bar.reset_eta();
        self.bar = Some(bar);
        self.started = Instant::now();
    }

    fn advance(&mut self, n: u64) {
        self.tokens += n;
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    fn note(&mut self, message: &str) {
        match &self.bar {
            // A hidden bar (output is not a terminal) would swallow the line.
            Some(bar) if !bar.is_hidden() => bar.println(message),
            _ => eprintln!("{message}"),
        }
    }

    fn should_stop(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}
