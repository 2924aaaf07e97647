//! `detox inspect-data`: prints [`data::inspect::shared_data_table`].

use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct InspectDataArgs {
    /// Skip and count malformed rows instead of stopping at the first.
    #[arg(long)]
    pub lenient: bool,
}

pub fn run(args: &InspectDataArgs) -> Result<()> {
    print!("{}", data::inspect::shared_data_table(args.lenient)?);
    Ok(())
}
