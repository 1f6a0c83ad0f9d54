//! `hark sim` without the server's dependencies, for quick iterations on the engine:
//! `cargo run --release -p hark-sim --example sim -- --trace FILE ...`.

use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: hark_sim::SimArgs,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = hark_sim::run(&cli.args) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}
