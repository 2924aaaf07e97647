//! `detox report DIR` and `detox compare DIR_A DIR_B`: tables and charts from stored outputs,
//! without loading a model (everything lives in the `report` crate; this is the command line).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The experiment folder (`output:` of the spec): one sub-folder per cell.
    pub dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// The first experiment folder (A; differences are B − A).
    pub a: PathBuf,
    /// The second experiment folder (B).
    pub b: PathBuf,
    /// Where to write compare.{parquet,csv,md} (default: <B>/report/compare-<name of A>).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run_report(args: &ReportArgs) -> Result<()> {
    let output = report::write_report(&args.dir)?;
    print!("{}", output.markdown);
    note!(
        "{} cells ({} complete, {} incomplete); wrote {} files to {}",
        output.complete_cells + output.incomplete_cells,
        output.complete_cells,
        output.incomplete_cells,
        output.files.len(),
        output.report_dir.display()
    );
    Ok(())
}

pub fn run_compare(args: &CompareArgs) -> Result<()> {
    let a = report::Experiment::load(&args.a)?;
    let b = report::Experiment::load(&args.b)?;
    let comparison = report::compare(&a, &b);
    let out = args.out.clone().unwrap_or_else(|| {
        let name = args
            .a
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "a".to_owned());
        args.b
            .join(report::REPORT_DIR)
            .join(format!("compare-{name}"))
    });
    let files = comparison.write(&out)?;
    print!("{}", comparison.markdown());
    note!(
        "{} rows; wrote {} files to {}",
        comparison.rows.len(),
        files.len(),
        out.display()
    );
    Ok(())
}
