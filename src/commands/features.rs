//! `loupe features list | show`: the named features of a feature book, resolved against a model.

use std::path::PathBuf;

use anyhow::Context;
use candle_core::Tensor;
use clap::Subcommand;
use loupe_model::HookPoint;
use loupe_scope::load_book;

use super::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Every feature of the book: its hook, width, norm and where it comes from.
    List(BookArgs),
    /// One feature: its largest coordinates and, for a residual-stream direction, the tokens the
    /// unembedding reads from it (logit lens).
    Show {
        /// The feature's name.
        name: String,
        #[command(flatten)]
        book: BookArgs,
        /// Coordinates and tokens to show.
        #[arg(long, default_value_t = 10)]
        top: usize,
    },
}

#[derive(clap::Args, Debug)]
pub struct BookArgs {
    /// The feature book (TOML; see configs/features-smollm2.toml).
    #[arg(long, default_value = "configs/features-smollm2.toml")]
    book: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::List(book) => {
            let model = book.model.load()?;
            for feature in load_book(&book.book, &model)? {
                println!("{}", feature.describe());
            }
            Ok(())
        }
        Command::Show { name, book, top } => {
            let model = book.model.load()?;
            let features = load_book(&book.book, &model)?;
            let names: Vec<&str> = features.iter().map(|f| f.name.as_str()).collect();
            let feature = features.iter().find(|f| f.name == name).with_context(|| {
                format!(
                    "{} has no feature '{name}'; it has {}",
                    book.book.display(),
                    names.join(", ")
                )
            })?;
            println!("{}", feature.describe());
            if !feature.concepts.is_empty() {
                println!("concept words: {}", feature.concepts.join(", "));
            }
            let d = &feature.direction;
            let mut order: Vec<usize> = (0..d.len()).collect();
            order.sort_by(|&a, &b| d[b].abs().total_cmp(&d[a].abs()));
            println!("largest coordinates:");
            for &i in order.iter().take(top) {
                println!("  {i:>6}  {:+.4}", d[i]);
            }
            if matches!(
                feature.hook,
                HookPoint::Embed
                    | HookPoint::ResidPre(_)
                    | HookPoint::ResidMid(_)
                    | HookPoint::ResidPost(_)
                    | HookPoint::MlpOut(_)
                    | HookPoint::AttnOut(_)
            ) {
                let v = Tensor::from_slice(d, (1, 1, d.len()), model.device())?;
                let logits = model.unembed(&v)?.flatten_all()?.to_vec1::<f32>()?;
                let mut ids: Vec<usize> = (0..logits.len()).collect();
                ids.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
                let tokens: Vec<String> = ids
                    .iter()
                    .take(top)
                    .map(|&i| format!("{:?}", model.tokenizer.token_text(i as u32)))
                    .collect();
                println!("logit lens (tokens the direction promotes): {}", tokens.join(" "));
            }
            Ok(())
        }
    }
}
