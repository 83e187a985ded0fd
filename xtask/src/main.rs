//! `cargo xtask <command>`: project automation (tool bootstrap, tests, benchmarks, local clusters).
fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        _ => {
            eprintln!("usage: cargo xtask <up|test|bench|tools|cluster>");
            std::process::exit(2);
        }
    }
}
