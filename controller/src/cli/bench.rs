//! `ghatta bench` (being written).

/// Bench arguments.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {}

/// Run the benchmark.
pub async fn run(_args: BenchArgs) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("bench is not available in this build")
}
