//! Training curves for TensorBoard: scalars, histograms and text through tensorboard-rs, written
//! into the run directory so that `tensorboard --logdir checkpoints` shows every run.

use std::path::Path;

use protobuf::RepeatedField;
use tensorboard_proto::summary::{Summary, SummaryMetadata, SummaryMetadata_PluginData, Summary_Value};
use tensorboard_proto::tensor::TensorProto;
use tensorboard_proto::types::DataType;
use tensorboard_rs::summary_writer::FileWriter;

pub struct TensorBoard {
    writer: FileWriter,
}

impl TensorBoard {
    /// Event files go into `dir` (one new file per run; a resumed run adds one beside the old).
    pub fn new(dir: &Path) -> Self {
        TensorBoard {
            writer: FileWriter::new(dir),
        }
    }

    pub fn scalar(&mut self, tag: &str, value: f64, step: u64) {
        self.writer
            .add_summary(tensorboard_rs::summary::scalar(tag, value as f32), step as usize);
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
        self.writer.add_summary(summary, step as usize);
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
        self.writer.add_summary(summary, step as usize);
    }

    pub fn flush(&mut self) {
        self.writer.flush();
    }
}
