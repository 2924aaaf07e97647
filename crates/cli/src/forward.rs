//! `detox forward`: logits and hidden states for given token ids, written as safetensors.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use tch::{Kind, Tensor};

use crate::ModelArgs;

#[derive(Args, Debug)]
pub struct ForwardArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Comma-separated token ids, e.g. 1,2,3.
    #[arg(long, value_delimiter = ',', required = true)]
    pub ids: Vec<i64>,
    /// Output .safetensors with `logits` [T, V] and `last_hidden` [T, H] (float32).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: &ForwardArgs) -> Result<()> {
    let loaded = args.model.load()?;
    let model = loaded.model.as_ref();
    lm::check_token_ids(&args.ids, model.info().vocab_size)?;
    let input = Tensor::from_slice(&args.ids).unsqueeze(0);
    let mask = input.ones_like();
    let mut cache = model.new_cache();
    let (hidden, logits) = tch::no_grad(|| {
        let hidden = model.forward_hidden(&input, &mask, &mut cache);
        let logits = model.logits(&hidden);
        (hidden, logits)
    });
    let to_cpu = |t: Tensor| {
        t.squeeze_dim(0)
            .to_kind(Kind::Float)
            .to_device(tch::Device::Cpu)
            .contiguous()
    };
    Tensor::write_safetensors(
        &[("logits", to_cpu(logits)), ("last_hidden", to_cpu(hidden))],
        &args.out,
    )
    .with_context(|| format!("{}: cannot write", args.out.display()))?;
    eprintln!(
        "wrote {} ({} positions)",
        args.out.display(),
        args.ids.len()
    );
    Ok(())
}
