//! `cargo xtask <command>`: project automation (tool bootstrap, tests, benchmarks, local clusters).
mod cluster;
mod tools;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("tools") => tools::run(&args[1..]),
        Some("cluster") => cluster::run(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask <up|test|bench|tools|cluster>");
            std::process::exit(2);
        }
    };
    // One line a person can act on, not anyhow's multi-line debug dump.
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
    Ok(())
}
