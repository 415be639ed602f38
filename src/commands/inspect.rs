use anyhow::Context;
use loupe_model::{HookPoint, Hooks};

use super::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The text to run.
    #[arg(long)]
    pub prompt: String,
    /// The hook point to read, e.g. blocks.15.hook_resid_post.
    #[arg(long)]
    pub hook: String,
    /// How many logit-lens tokens to show per position.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let hook: HookPoint = args.hook.parse()?;
    let model = args.model.load()?;
    let width = model.width(hook)?;
    let ids = model.encode_prompt(&args.prompt)?;
    let batch = model.batch(&[&args.prompt])?;
    let mut hooks = Hooks::new().capture(hook);
    let start = std::time::Instant::now();
    model.capture(&batch, &mut hooks)?;
    eprintln!(
        "forward pass up to {hook}: {} tokens in {:.3}s",
        ids.len(),
        start.elapsed().as_secs_f64()
    );
    let activation = hooks
        .captured(hook)
        .context("the hook point was not reached")?
        .reshape((ids.len(), width))?; // per-head activations flattened
    let norms = activation.sqr()?.sum(1)?.sqrt()?.to_vec1::<f32>()?;

    println!(
        "{hook}: shape {:?} (batch, tokens, width; {} as the model lays it out)",
        [1, ids.len(), width],
        model.spec().shape(hook)
    );
    let lens = if hook.is_model_width() {
        Some(model.unembed(&activation)?)
    } else {
        println!("(no logit lens: {hook} is not a vector in the residual stream's space)");
        None
    };
    println!(
        "{:>4}  {:<16} {:>10}  logit lens (top {})",
        "pos", "token", "norm", args.top
    );
    for (pos, (&id, norm)) in ids.iter().zip(norms).enumerate() {
        let token = format!("{:?}", model.tokenizer.token_text(id));
        let mut line = format!("{pos:>4}  {token:<16} {norm:>10.2}");
        if let Some(lens) = &lens {
            let logits = lens.get(pos)?.to_vec1::<f32>()?;
            let mut order: Vec<usize> = (0..logits.len()).collect();
            order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
            let top: Vec<String> = order
                .iter()
                .take(args.top)
                .map(|&t| format!("{:?}", model.tokenizer.token_text(t as u32)))
                .collect();
            line.push_str("  ");
            line.push_str(&top.join(" "));
        }
        println!("{line}");
    }
    Ok(())
}
