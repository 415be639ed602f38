use super::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let model = args.model.load()?;
    let spec = model.spec();
    println!(
        "# {} hook points of a {} model",
        spec.hook_points().len(),
        spec.family
    );
    for hook in spec.hook_points() {
        println!("{hook}\t{}", spec.shape(hook));
    }
    Ok(())
}
