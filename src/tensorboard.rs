//! Training curves for TensorBoard: scalars, histograms and text through tensorboard-rs, written
//! into the run directory so that `tensorboard --logdir checkpoints` shows every run.
//!
//! Events go through tensorboard-rs's `RecordWriter` on this thread rather than its `FileWriter`,
//! whose background thread panics (and then aborts the process) when a write fails, as on a full
//! disk. Here the first failed write is kept as an error, later events are dropped, and the
//! command says so; training itself goes on and its checkpoint reports its own errors.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use protobuf::RepeatedField;
use tensorboard_proto::event::Event;
use tensorboard_proto::summary::{Summary, SummaryMetadata, SummaryMetadata_PluginData, Summary_Value};
use tensorboard_proto::tensor::TensorProto;
use tensorboard_proto::types::DataType;
use tensorboard_rs::record_writer::RecordWriter;

pub struct TensorBoard {
    path: PathBuf,
    /// `None` once a write has failed.
    writer: Option<RecordWriter<BufWriter<File>>>,
    /// The first failure, to report once.
    failure: Option<String>,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl TensorBoard {
    /// Event files go into `dir` (one new file per run; a resumed run adds one beside the old).
    /// A directory that cannot be written is an error here, before any work starts.
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create the directory", dir.display()))?;
        let name = format!(
            "events.out.tfevents.{:010}.loupe.{}",
            now() as u64,
            std::process::id()
        );
        let path = dir.join(name);
        let file = File::create(&path).with_context(|| format!("{}: cannot create", path.display()))?;
        let mut board = TensorBoard {
            path,
            writer: Some(RecordWriter::new(BufWriter::new(file))),
            failure: None,
        };
        let mut version = Event::new();
        version.set_wall_time(now());
        version.set_file_version("brain.Event:2".to_string());
        board.write(version);
        board.flush();
        if let Some(failure) = board.failure.take() {
            anyhow::bail!("{failure}");
        }
        Ok(board)
    }

    fn write(&mut self, event: Event) {
        use protobuf::Message;
        let Some(writer) = &mut self.writer else {
            return;
        };
        let result = event
            .write_to_bytes()
            .map_err(std::io::Error::other)
            .and_then(|bytes| writer.write(&bytes));
        if let Err(e) = result {
            self.fail(e);
        }
    }

    fn fail(&mut self, e: std::io::Error) {
        self.writer = None;
        self.failure = Some(format!(
            "{}: cannot write TensorBoard events ({e}); later events of this run are not recorded",
            self.path.display()
        ));
    }

    fn summary(&mut self, summary: Summary, step: u64) {
        let mut event = Event::new();
        event.set_wall_time(now());
        event.set_step(step as i64);
        event.set_summary(summary);
        self.write(event);
    }

    /// The first write that failed, once (the caller tells the user).
    pub fn take_failure(&mut self) -> Option<String> {
        self.failure.take()
    }

    pub fn scalar(&mut self, tag: &str, value: f64, step: u64) {
        self.summary(tensorboard_rs::summary::scalar(tag, value as f32), step);
    }

    /// A histogram of `values` over buckets ending at each of `limits` (the last bucket also takes
    /// everything above).
    pub fn histogram(&mut self, tag: &str, values: &[f64], limits: &[f64], step: u64) {
        if values.is_empty() {
            return;
        }
        let mut counts = vec![0.0; limits.len()];
        for &v in values {
            let bucket = limits.iter().position(|&l| v <= l).unwrap_or(limits.len() - 1);
            counts[bucket] += 1.0;
        }
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = values.iter().sum();
        let sum_squares: f64 = values.iter().map(|v| v * v).sum();
        let summary = tensorboard_rs::summary::histogram_raw(
            tag,
            min,
            max,
            values.len() as f64,
            sum,
            sum_squares,
            limits,
            &counts,
        );
        self.summary(summary, step);
    }

    /// Text (Markdown) under `tag`, shown in TensorBoard's Text tab.
    pub fn text(&mut self, tag: &str, text: &str, step: u64) {
        let mut plugin = SummaryMetadata_PluginData::new();
        plugin.set_plugin_name("text".into());
        let mut metadata = SummaryMetadata::new();
        metadata.set_plugin_data(plugin);
        let mut tensor = TensorProto::new();
        tensor.set_dtype(DataType::DT_STRING);
        tensor.set_string_val(RepeatedField::from_vec(vec![text.as_bytes().to_vec()]));
        let mut value = Summary_Value::new();
        value.set_tag(tag.into());
        value.set_metadata(metadata);
        value.set_tensor(tensor);
        let mut summary = Summary::new();
        summary.set_value(RepeatedField::from_vec(vec![value]));
        self.summary(summary, step);
    }

    pub fn flush(&mut self) {
        if let Some(writer) = &mut self.writer {
            if let Err(e) = writer.flush() {
                self.fail(e);
            }
        }
    }
}
