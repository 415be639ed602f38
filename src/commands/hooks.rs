use loupe_model::HookPoint;

use super::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let model = args.model.load()?;
    for hook in HookPoint::all(model.llama.n_layers()) {
        println!("{hook}\t{}", model.llama.width(hook));
    }
    Ok(())
}
