//! How long-running work (a capture, training, a sweep) reports progress and learns that it
//! should stop.

/// How long-running work reports progress, and learns that it should stop (Ctrl-C). Library code
/// never prints: the binary implements this with a progress bar.
pub trait Progress {
    /// Work of `total` units (tokens) starts; `done` of them were done before (a resumed run).
    fn start(&mut self, _what: &str, _total: u64, _done: u64) {}
    /// `n` more units are done.
    fn advance(&mut self, _n: u64) {}
    /// Something worth telling the user (a resumed run, a skipped file).
    fn note(&mut self, _message: &str) {}
    /// Whether to stop as soon as what is done so far is saved.
    fn should_stop(&self) -> bool {
        false
    }
}

/// Reports nothing and never stops.
pub struct NoProgress;

impl Progress for NoProgress {}
